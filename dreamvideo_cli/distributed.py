"""Learning over several processes with torch.distributed, one device each, as launched by
`torchrun` or `accelerate launch`: the building blocks the trainer (learn/trainer.py) calls.

- `DistributedContext`: the process group from the launcher's environment (NCCL on CUDA,
  gloo on the CPU), one device per process, rank 0 the only writer, and `fail_together`,
  which turns a failure on any rank into a failure on every rank before anything is committed.
- Random streams need nothing from here: every process holds the same streams, seeded with
  the run's seed (learn/streams.py), draws the whole global batch from them (photos, clip
  windows, noise, timesteps) as one process with batch N * B would, and computes the loss on
  its own rows of it (`Trainer.rows`, `diffusion_loss(rows=...)`). So one process draws
  what earlier releases drew, and a saved state resumes on any number of processes.
- Data parallel: the trainables (adapters, the placeholder row) are a few million values,
  so instead of wrapping the denoiser in DDP the trainer averages their gradients itself
  after backward (`average_gradients`, one flat all-reduce). This works the same with a
  sharded denoiser, a compiled one or gradient checkpointing, and covers trainables outside
  the denoiser. They start identical because every rank initialises them after seeding with
  the same seed; `broadcast_parameters` gives every rank rank 0's values where that is not so
  (values read by one rank), and `max_divergence` checks that ranks did not drift.
- Sharded frozen weights (`shard_frozen`, `shard_denoiser`): FSDP2 `fully_shard` on each
  layer the family checkpoints and then on the whole denoiser, leaving out every parameter
  that requires grad, so the adapters stay whole on every rank and are averaged as above.

What the trainer calls, and when:

    Trainer.start:
        ctx = DistributedContext.from_environment(pick_device(settings.device))   # first
        seed_everything(ctx.broadcast_object(seed))     # rank 0's seed (drawn there if unset)
        a new run folder: made by rank 0 alone, its path ctx.broadcast_object'ed to the others
        parts = backbone.load(ctx.device, dtype); prepare_denoiser(parts)
        if --shard: shard_denoiser(parts, ctx)           # the stage attaches adapters after
    Trainer(...): average_gradients(params, ctx) registered as a gradient hook
    every step (Trainer.train):
        if ctx.any_rank(stop requested): rank 0 saves the state; ctx.close(); stop
        loss on this rank's rows of the global batch; loss.backward()
        average_gradients(params, ctx); optimizer step
        every log_every steps: the pending losses all-reduced (their mean over ranks)
    rank 0 alone writes: the run folder, the loss log, checkpoints, the state, previews (every
        rank samples a preview, which a sharded denoiser needs), the registry entry
    Trainer.publish:
        with ctx.fail_together("the last step"): ...    # a rank that failed commits nothing
        rank 0 stores the version; its manifest ctx.broadcast_object'ed; ctx.close()
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from dreamvideo_cli.backbone import Components
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.runtime import indexed, pick_device

__all__ = [
    "DistributedContext",
    "PeerFailed",
    "average_gradients",
    "broadcast_parameters",
    "end_process",
    "frozen_bytes",
    "launched",
    "max_divergence",
    "shard_denoiser",
    "shard_frozen",
]

T = TypeVar("T")

# Long enough for the slowest rank to load a 14B model before the first collective; a rank
# that dies is noticed sooner, by the launcher (it stops the other processes).
DEFAULT_TIMEOUT = timedelta(minutes=10)


class PeerFailed(DVError):
    """Another process of the run failed; this one stops too, having committed nothing."""


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a launcher started this process as one of several (WORLD_SIZE > 1)."""
    env = os.environ if environ is None else environ
    return int(env.get("WORLD_SIZE", "1")) > 1


def end_process(code: int) -> NoReturn:
    """End this process of a launched run with `code`, after Python's exit handlers and with
    its output flushed, but without the C++ runtime's exit-time destructors: there, with the
    run done (its files written, its process group destroyed), a gloo process sometimes
    aborts ("terminate called without an active exception"), which the launcher reports as a
    failed run: 2 of 8 two-process runs of the tests' learning worker (torch 2.15, CPU)."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _import_model_libraries() -> None:
    """Import the model libraries before the process group exists. Imported after it, the
    processes sometimes abort as they exit, the run done ("terminate called without an
    active exception"): transformers' model code imported after `init_process_group` aborted
    4 of 16 two-process gloo runs at exit, imported before it 0 of 16 (torch 2.15, CPU)."""
    for name in ("transformers.modeling_utils", "diffusers"):
        with contextlib.suppress(ImportError):  # a plugin's backbone may need neither
            importlib.import_module(name)


@dataclass
class DistributedContext:
    """Where this process stands in the run. One process (no launcher) is the same object
    with world_size 1, on which every collective below is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # "nccl" or "gloo"; None for one process
    _owns_group: bool = field(default=False, repr=False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes the run folder, previews and the registry."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None

    @classmethod
    def from_environment(
        cls,
        device: str | torch.device = "auto",
        *,
        timeout: timedelta = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
    ) -> DistributedContext:
        """This process's place from RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
        MASTER_PORT (torchrun and `accelerate launch` set all five), with the process group
        joined; one process on `device` when WORLD_SIZE is unset or 1.

        `device` is the run's device ("auto", "cpu", "cuda" or what `pick_device` chose):
        launched processes on CUDA each take cuda:LOCAL_RANK and use NCCL; on the CPU, gloo.
        A process group someone else made (accelerate's `Accelerator`) is used as it is, and
        left to them to destroy."""
        env = os.environ if environ is None else environ
        resolved = pick_device(device) if isinstance(device, str) else indexed(device)
        if not launched(env):
            return cls(device=resolved)
        missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise DVError(
                f"WORLD_SIZE is set but {', '.join(missing)} is not",
                "start several processes with torchrun or accelerate launch, or unset WORLD_SIZE",
            )
        rank, world_size, local_rank = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
        if resolved.type == "cuda":
            count = torch.cuda.device_count()
            if local_rank >= count:
                raise DVError(
                    f"process {rank} is local process {local_rank} but this machine has {count} GPU(s)",
                    f"launch at most {count} processes per machine (--nproc-per-node {count})",
                )
            # One device per process: the launcher's local rank picks it, never --device's index.
            resolved = torch.device("cuda", local_rank)
            torch.cuda.set_device(resolved)
            backend = "nccl"
        elif resolved.type == "cpu":
            backend = "gloo"
        else:
            raise DVError(
                f"learning over several processes needs CUDA or the CPU, not {resolved.type}", "use --device cuda"
            )
        owns = not dist.is_initialized()
        if owns:
            _import_model_libraries()
            dist.init_process_group(
                backend,
                init_method="env://",
                rank=rank,
                world_size=world_size,
                timeout=timeout,
                # NCCL binds its communicator to the device now rather than guessing later.
                device_id=resolved if backend == "nccl" else None,
            )
        elif (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
            raise DVError("the process group already made does not match RANK/WORLD_SIZE", "launch dv directly")
        return cls(rank, world_size, local_rank, resolved, backend, owns)

    # -- collectives (no-ops for one process) -----------------------------------------
    def barrier(self) -> None:
        if self.is_distributed:
            # A tensor all-reduce rather than dist.barrier(): NCCL's barrier guesses a device.
            self.all_ok(True)

    def all_ok(self, ok: bool) -> bool:
        """True on every rank when `ok` is true on every rank."""
        if not self.is_distributed:
            return ok
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank. For decisions every rank must
        take at the same step: a stop request (Ctrl-C or SIGTERM reaches the processes at
        slightly different moments), a loss that is not finite."""
        return not self.all_ok(not flag)

    @contextmanager
    def fail_together(self, what: str = "this step") -> Iterator[None]:
        """Run the block on every rank, then agree: when it raised on any rank, it raises on
        every rank (the original error where it happened, `PeerFailed` elsewhere), so
        nobody goes on to commit. Put the work before a commit inside (writing a temporary
        file, checking a state) and the commit after the block.

        The block must not run collectives that only some ranks reach: a rank that failed
        before one would be waiting here while the others wait there."""
        error: BaseException | None = None
        try:
            yield
        except Exception as exc:
            error = exc
        if not self.all_ok(error is None):
            if error is not None:
                raise error
            raise PeerFailed(
                f"another process of this run failed during {what}", "see its error above; nothing was saved"
            )

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        """Rank `src`'s picklable `obj` on every rank (a run id, a folder path, a plan)."""
        if not self.is_distributed:
            return obj
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=src, device=self.device)
        return box[0]  # type: ignore[no-any-return]

    def close(self, *, together: bool = False) -> None:
        """Leave the process group (when this context made it). Safe to call twice.

        `together`: every process is leaving at this point of the run (it finished, or all
        agreed to stop), so wait for all of them first: a process that tears down its
        connections while a peer is still finishing the last collective can bring that peer
        down with it (gloo aborts the process). Not on an error path, where a peer may never
        come."""
        if self._owns_group and dist.is_initialized():
            if together:
                self.barrier()
            dist.destroy_process_group()
        self._owns_group = False

    def __enter__(self) -> DistributedContext:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(together=exc_type is None)


# -- data parallel ------------------------------------------------------------------------
def _unique(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def broadcast_parameters(params: Iterable[torch.Tensor], ctx: DistributedContext, src: int = 0) -> None:
    """Give every rank rank `src`'s values, so that all start identical (fresh adapters are
    random, a resumed state may have been read by one rank). One broadcast per dtype."""
    if not ctx.is_distributed:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in _unique(params):
        by_dtype.setdefault(p.dtype, []).append(p)
    with torch.no_grad():
        for tensors in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1) for t in tensors]).to(ctx.device)
            dist.broadcast(flat, src=src)
            for t, value in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
                t.copy_(value.view_as(t))


def average_gradients(params: Iterable[torch.Tensor], ctx: DistributedContext) -> None:
    """Replace each trainable's gradient by the mean over ranks, in one all-reduce; call it
    after the (last micro-step's) backward, before clipping and the optimizer step.

    With every rank's loss a mean over the same number of samples, the mean of the ranks'
    gradients is the gradient of the mean over the global batch. A parameter that got no
    gradient on some ranks counts as zero there; one that got none anywhere keeps None on
    every rank (the optimizer skips it everywhere). Reduced in float32, whatever the
    parameters' dtype."""
    if not ctx.is_distributed:
        return
    trainable = [p for p in _unique(params) if p.requires_grad]
    if not trainable:
        return
    parts: list[torch.Tensor] = []
    for p in trainable:
        grad = p.grad
        parts.append(
            grad.detach().reshape(-1).float() if grad is not None else torch.zeros(p.numel(), device=ctx.device)
        )
    # One "has a gradient" count per parameter rides in the same buffer.
    parts.append(torch.tensor([float(p.grad is not None) for p in trainable], device=ctx.device))
    flat = torch.cat([t.to(ctx.device) for t in parts])
    dist.all_reduce(flat)
    sizes = [p.numel() for p in trainable]
    *grads, counts = flat.split([*sizes, len(trainable)])
    flat /= ctx.world_size  # gradients and counts alike; only "count > 0" is read below
    for p, grad, count in zip(trainable, grads, counts.tolist(), strict=True):
        if count == 0:
            p.grad = None
        elif p.grad is None:
            p.grad = grad.view_as(p).to(p.dtype).clone()
        else:
            p.grad.copy_(grad.view_as(p))


def max_divergence(params: Iterable[torch.Tensor], ctx: DistributedContext) -> float:
    """The largest absolute difference of any value from rank 0's, over every rank (0.0 for
    one process). For tests, and for a check before saving that ranks did not drift."""
    if not ctx.is_distributed:
        return 0.0
    tensors = _unique(params)
    if not tensors:
        return 0.0
    local = torch.cat([t.detach().reshape(-1).float() for t in tensors]).to(ctx.device)
    reference = local.clone()
    dist.broadcast(reference, src=0)
    worst = (local - reference).abs().max().reshape(1)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst.item())


# -- sharded frozen weights -------------------------------------------------------------------
def frozen_bytes(module: nn.Module) -> tuple[int, int]:
    """(bytes this rank holds, bytes of the whole) of `module`'s frozen parameters (trainable
    ones are left out: they are whole everywhere): equal unsharded, and about 1/world_size of
    the whole after `shard_frozen` (dim 0 of each tensor is split, padded to world_size)."""
    from torch.distributed.tensor import DTensor

    local = full = 0
    for p in module.parameters():
        if p.requires_grad:
            continue
        size = p.element_size()
        full += p.numel() * size
        local += (p.to_local().numel() if isinstance(p, DTensor) else p.numel()) * size
    return local, full


def shard_frozen(model: nn.Module, units: Sequence[nn.Module], ctx: DistributedContext) -> None:
    """FSDP2 `fully_shard` on each unit (a block, gathered whole just before it runs and freed
    after it), then on `model` for what no unit holds (embeddings, norms, heads). Every rank
    keeps 1/world_size of the frozen parameters, on `ctx.device`.

    Parameters that require grad are left out of every unit (`ignored_params`): they stay
    whole on every rank and in their dtype, to be averaged with `average_gradients`, and the
    adapter state is saved from rank 0 as on one device. So adapters attached before or
    after this call both work (after: attaching only re-wires sub-layers FSDP already
    holds). No mixed-precision policy: the frozen weights are gathered in the dtype they
    were loaded in (bf16 on a GPU), as one device computes with them.

    FSDP moves what it shards to `ctx.device` (a unit whole, then only its shard stays), so a
    model one card cannot hold is loaded on the CPU and sharded from there; what it leaves
    out stays where it is: make adapters on `ctx.device`."""
    if not ctx.is_distributed:
        return
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # Modules whose forward returns a view (UNet3D's temporal convs and its output) make
    # FSDP2 warn that an in-place op on the output would skip its backward hook. dv's
    # families do not modify those outputs in place: the tests check that sharded gradients
    # equal unsharded ones.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for unit in [*units, model]:
        trainable = {p for p in unit.parameters() if p.requires_grad}
        fully_shard(unit, mesh=mesh, ignored_params=trainable or None)


def shard_denoiser(parts: Components, ctx: DistributedContext) -> int:
    """`shard_frozen` on the denoiser, one unit per layer its family checkpoints (each UNet
    resnet, temporal conv and transformer; each DiT block); returns how many units."""
    units = []
    for parent, key in parts.family.checkpoint_targets(parts.denoiser):
        units.append(parent[key] if isinstance(key, int) else getattr(parent, key))
    shard_frozen(parts.denoiser, units, ctx)
    return len(units)
