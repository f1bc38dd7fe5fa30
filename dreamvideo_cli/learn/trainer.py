"""One trainer for every learning run: the step loop, the trainable state, the optimizer and its
schedule, checkpoints and `--resume`, previews, progress events and a clean stop on Ctrl-C.

Textual inversion, the identity adapter and the motion adapter are short functions over it
(learn/subject.py, learn/motion.py): each says what trains, with which loss on which data.
What the trainer does each step, in order (`Trainer.train`):

    stop requested?  -> save the state, raise `Interrupted` (resumable)
    loss = loss_fn()                       the stage's loss on a batch it draws itself
    loss.backward(); gradient hooks        (data parallel all-reduces here)
    optimizer step, schedule step
    progress event (losses read back every `log_every` steps), adapter checkpoint, preview

The run's state (`Run.save_state`) is the trainables registered with `keep`, the random
streams and the optimizer, as safetensors + JSON, never a pickle; the same keys the engine
has always written, so a run started by an earlier release resumes.

Under `torchrun` or `accelerate launch` one run spans N processes (`distributed.py`): every
process draws the whole global batch from the same streams and computes its own rows of it
(`diffusion_loss(rows=...)`), the trainables' gradients are averaged after backward, a stop
is agreed by all processes at the same step, and only rank 0 writes (the run folder, the
log, checkpoints, previews, the registry entry). With `--shard` the frozen denoiser's blocks
are sharded with FSDP2 and the adapters stay whole on every rank.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist
from PIL import Image
from torch import nn

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import AdapterSite, Backbone, Components, Fingerprint
from dreamvideo_cli.distributed import DistributedContext, average_gradients, frozen_bytes, shard_denoiser
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.events import (
    CheckpointSaved,
    EventHandler,
    Note,
    RunStarted,
    StageFinished,
    StageStarted,
    StepDone,
    ignore_events,
)
from dreamvideo_cli.experts import chosen_experts, expert_sites, restricted
from dreamvideo_cli.learn.interrupts import StopRequested, interrupted
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.learn.optim import AdamWWithWarmup
from dreamvideo_cli.learn.previews import write_preview
from dreamvideo_cli.learn.run_folder import Run, save_tensors
from dreamvideo_cli.learn.streams import RandomStreams
from dreamvideo_cli.memory.levers import AppliedLevers, MemoryLevers, apply_levers, check_combination, store_fp8
from dreamvideo_cli.memory.placement import check_backbone_path, load_frozen_parts, use
from dreamvideo_cli.plugins import get_backbone
from dreamvideo_cli.registry_entries import store_adapter
from dreamvideo_cli.run_layout import STAGES, Stage
from dreamvideo_cli.runtime import pick_device
from dreamvideo_cli.speed import compiled_denoiser, gradient_checkpointing

if TYPE_CHECKING:
    from dv_registry import Manifest, Registry


class RunSettings(Protocol):
    """What the trainer reads from a learn config (`SubjectConfig`, `MotionConfig`)."""

    backbone: str
    backbone_path: str | None
    random_weights: bool
    seed: int | None
    device: str
    warmup_steps: int
    weight_decay: float
    offset_noise: float
    gradient_checkpointing: bool
    compile: bool
    preview_every: int
    save_every: int
    log_every: int
    description: str
    shard: bool
    fp8: bool
    blocks_to_swap: int
    offload_activations: bool
    experts: str | None


def open_backbone(settings: RunSettings) -> tuple[Backbone, Fingerprint]:
    """The backbone a learn config names, and its fingerprint: this fails now, before a run
    folder exists, when the weights are missing."""
    check_backbone_path(settings.backbone_path)
    backbone = get_backbone(settings.backbone)(path=settings.backbone_path, random_weights=settings.random_weights)
    backbone.fetch_weights()  # every missing part named at once, before any run folder exists
    return backbone, backbone.fingerprint()


GradientHook = Callable[[Sequence[torch.Tensor]], None]
DenoiserWrapper = Callable[[nn.Module], nn.Module]


class Trainer:
    """A learning run in progress: its folder, the loaded backbone, its random streams, what
    it trains and where it stands (stage, step). Build it with `Trainer.start`."""

    def __init__(
        self,
        run: Run,
        backbone: Backbone,
        parts: Components,
        settings: RunSettings,
        on_event: EventHandler,
        *,
        resumed: bool,
        ctx: DistributedContext | None = None,
    ) -> None:
        self.ctx = ctx or DistributedContext(device=parts.device)
        # Progress is the main process's to report; the others would repeat it.
        on_event = on_event if self.ctx.is_main else ignore_events
        self.run, self.backbone, self.parts, self.settings, self.on_event = run, backbone, parts, settings, on_event
        self.started = time.monotonic()
        self.kind: str = run.config()["kind"]
        # A backbone of several experts: adapters on the chosen ones, timesteps in their ranges.
        chosen = chosen_experts(backbone, "motion" if self.kind == "motion" else "identity", settings.experts)
        self.experts = restricted(parts.family.experts(), chosen)
        self.sites: list[AdapterSite] = expert_sites(backbone.adapter_sites(parts.denoiser), chosen)
        if chosen and not settings.experts:  # the registry entry records the experts used, not "default"
            settings.experts = ",".join(e.name for e in chosen)
        self.levers = MemoryLevers(settings.fp8, settings.blocks_to_swap, settings.offload_activations)
        self.streams = RandomStreams(parts.device, settings.seed or 0)
        self.stop = StopRequested()
        self.model: nn.Module = parts.denoiser  # what each step calls: the denoiser, maybe wrapped
        self.applied: AppliedLevers | None = None  # block swap and activation offload, in `session`
        self.checkpoints: list[int] = []
        self._kept: dict[str, torch.Tensor | AdapterSet] = {}
        self._wrappers: list[DenoiserWrapper] = []
        self._gradient_hooks: list[GradientHook] = []
        self._saved: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = run.load_state() if resumed else None
        if self.ctx.is_distributed:
            self.on_gradients(lambda params: average_gradients(params, self.ctx))
        self.order = STAGES[self.kind]
        self.stage, self.step = self.order[0], 0
        if self._saved is not None:
            meta = self._saved[1]
            self.stage, self.step = Stage(meta["stage"]), int(meta["step"])
            self.checkpoints = list(meta.get("checkpoints", []))

    @classmethod
    def start(
        cls,
        registry_home: Path,
        kind: str,
        name: str,
        settings: RunSettings,
        inputs: str | Path,
        resumed: Run | None,
        on_event: EventHandler,
        opened: tuple[Backbone, Fingerprint] | None = None,
    ) -> Trainer:
        """A new run folder (its seed drawn now and recorded in the config) or the resumed
        one, then every frozen part loaded on the run's device and prepared."""
        backbone, fingerprint = opened or open_backbone(settings)
        chosen_experts(backbone, "motion" if kind == "motion" else "identity", settings.experts)  # refused now
        ctx = DistributedContext.from_environment(pick_device(settings.device))
        check_combination(
            shard=settings.shard, fp8=settings.fp8, blocks_to_swap=settings.blocks_to_swap,
            offload_activations=settings.offload_activations, compile=settings.compile,
        )  # fmt: skip
        if settings.shard and not ctx.is_distributed:
            raise DVError(
                "--shard splits the frozen weights over several processes, and this is one",
                "launch with torchrun --nproc-per-node N -m dreamvideo_cli ... (or accelerate launch)",
            )
        if not ctx.is_main:
            on_event = ignore_events
        # One seed and one run folder for all processes: rank 0's.
        seed = settings.seed if settings.seed is not None or not ctx.is_main else secrets.randbelow(2**31)
        settings.seed = ctx.broadcast_object(seed)
        torch.manual_seed(settings.seed)  # adapter initialisation draws from torch's global generator
        if resumed is None:
            folder = Run.create(registry_home, kind, name, settings, inputs).folder if ctx.is_main else Path()
            run = Run(ctx.broadcast_object(folder))
        else:
            run = resumed
        on_event(
            Note(f"run {run.id} in {run.folder}" + (f", {ctx.world_size} processes" if ctx.is_distributed else ""))
        )
        on_event(RunStarted(run.id, str(run.folder)))
        on_event(Note(f"loading backbone {fingerprint.describe()} on {ctx.device}"))
        try:
            parts = load_frozen_parts(backbone, ctx.device)  # on a GPU: to the host, each part to the GPU as it works
        except DVError:
            if resumed is None and ctx.is_main:  # a run that never started leaves no folder
                shutil.rmtree(run.folder, ignore_errors=True)
            raise
        if settings.fp8:
            saved = store_fp8(parts)
            on_event(Note(f"frozen denoiser's linear weights stored as scaled fp8: {saved / 2**30:.2f} GiB saved"))
        if settings.shard:
            # FSDP2 shards the parameters where they are, and a sharded denoiser stays put: every
            # part on the GPU from here on, as before placement was staged.
            use(parts, "denoiser", "codec", "appearance")
            parts = replace(parts, staging=None)
            units = shard_denoiser(parts, ctx)
            held, whole = frozen_bytes(parts.denoiser)
            on_event(
                Note(
                    f"frozen denoiser sharded over {ctx.world_size} processes in {units} units: "
                    f"each holds {held / 2**20:.1f} of its {whole / 2**20:.1f} MiB"
                )
            )
        return cls(run, backbone, parts, settings, on_event, resumed=resumed is not None, ctx=ctx)

    # --- what trains, and the hooks the scale and memory work plugs in -------------------------

    def keep(self, name: str, trainable: torch.Tensor | AdapterSet) -> None:
        """Register trainable state saved with the run and restored on `--resume`: a tensor
        under `name`, an adapter set's tensors under `name.<key>`."""
        self._kept[name] = trainable

    def wrap_denoiser(self, wrapper: DenoiserWrapper) -> None:
        """Wrap the module each step calls (torch.compile, sharding), applied in `session`."""
        self._wrappers.append(wrapper)

    def on_gradients(self, hook: GradientHook) -> None:
        """Run `hook(trainable parameters)` after each backward, before the optimizer step."""
        self._gradient_hooks.append(hook)

    def passed(self, stage: Stage) -> bool:
        """Whether the run is past `stage` (a resumed run may be)."""
        return self.stage == Stage.DONE or self.order.index(self.stage) > self.order.index(stage)

    def restore(self) -> None:
        """Put the saved trainables and random streams back (a resumed run); nothing otherwise."""
        if self._saved is None:
            return
        tensors, meta = self._saved
        with torch.no_grad():
            for name, trainable in self._kept.items():
                if isinstance(trainable, AdapterSet):
                    prefix = f"{name}."
                    trainable.load_adapter_state_dict(
                        {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
                    )
                else:
                    trainable.copy_(tensors[name])
        self.streams.restore(tensors, meta)
        if self.ctx.is_main:
            self.run.truncate_losses(self.stage, self.step)
        self.on_event(Note(f"resuming {self.stage} at step {self.step}"))

    @contextmanager
    def session(self) -> Iterator[Trainer]:
        """Ctrl-C and SIGTERM become a saved, resumable stop; the denoiser is wrapped (compiled)
        and its family's layers checkpointed while the run trains."""
        # A preview takes the staged denoiser off the GPU and back, to other addresses, under
        # which a recorded CUDA graph cannot replay: a run with previews compiles without them.
        cuda_graphs = not (self.settings.preview_every and self.parts.staging is not None)
        model = compiled_denoiser(self.parts.denoiser, self.settings.compile, self.parts.device, cuda_graphs)
        for wrap in self._wrappers:
            model = wrap(model)
        self.model = model
        checkpointing = gradient_checkpointing(
            self.parts.denoiser, self.parts.family, enabled=self.settings.gradient_checkpointing
        )
        levers = apply_levers(self.parts, self.levers, host=self.parts.staging)
        with self.stop.installed(), levers as self.applied, checkpointing:
            # After block swap took its blocks to the host: the rest of the denoiser comes to
            # the GPU, and nothing else stays there (the data is encoded).
            use(self.parts, "denoiser", experts=self.experts)
            yield self
        self.applied = None

    # --- the step loop -------------------------------------------------------------------------

    def global_batch(self, per_process: int) -> int:
        """The samples one step draws: the per-process batch times the number of processes."""
        return per_process * self.ctx.world_size

    def rows(self, global_batch: int) -> slice:
        """This process's rows of a global batch."""
        b = global_batch // self.ctx.world_size
        return slice(self.ctx.rank * b, (self.ctx.rank + 1) * b)

    def diffusion_loss(self, x0: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's training loss on this process's rows of the global batch: clean
        latents x0 [B, C, F', h, w] with context [B, T, D], timesteps and noise drawn from
        the run's stream for all B."""
        rows = self.rows(x0.shape[0]) if self.ctx.is_distributed else None
        return diffusion_loss(
            self.parts,
            x0,
            context,
            self.streams.torch,
            self.settings.offset_noise,
            mask,
            model=self.model,
            rows=rows,
            experts=self.experts,
        )

    def train(
        self,
        stage: Stage,
        total: int,
        params: Sequence[torch.Tensor],
        lr: float,
        loss_fn: Callable[[], torch.Tensor],
        *,
        describe: str,
        checkpoint: AdapterSet | None = None,
        preview: Callable[[int], None] | None = None,
    ) -> None:
        """Train `params` on `loss_fn` from where the run stands in `stage` to step `total`:
        AdamW with warm-up; `checkpoint`'s tensors kept every `save_every` steps (the registry
        tags `name:stepK`); `preview(step)` every `preview_every` steps and at the end."""
        if self.passed(stage):
            return
        settings = self.settings
        optimizer = self.optimizer(params, lr)
        if self.step and self._saved is not None:
            optimizer.restore(self._saved[0], self._saved[1]["optimizer"], self.step)
        self.on_event(StageStarted(stage, total, describe))
        pending: list[torch.Tensor] = []
        while self.step < total:
            if self.ctx.any_rank(bool(self.stop)):  # every process stops at the same step
                self.save_state(optimizer)
                self.ctx.close(together=True)
                raise interrupted(self.run, stage, self.step)
            pending.append(self.step_once(params, optimizer, loss_fn))
            self.step += 1
            self._report(pending, total, optimizer.lr)
            # The last step's adapter becomes the version itself, not a checkpoint.
            if checkpoint is not None and _every(settings.save_every, self.step) and self.step < total:
                self._save_checkpoint(checkpoint)
            if preview is not None and (
                _every(settings.preview_every, self.step) or (settings.preview_every and self.step == total)
            ):
                preview(self.step)
        self.on_event(StageFinished(stage))
        self._advance(optimizer)

    def optimizer(self, params: Sequence[torch.Tensor], lr: float) -> AdamWWithWarmup:
        return AdamWWithWarmup(params, lr, self.settings.weight_decay, self.settings.warmup_steps)

    def step_once(
        self, params: Sequence[torch.Tensor], optimizer: AdamWWithWarmup, loss_fn: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        """One optimisation step (what `dv bench` times): the loss, its gradients, the gradient
        hooks, the update. Returns the loss, still on the device."""
        loss = loss_fn()
        loss.backward()
        for hook in self._gradient_hooks:
            hook(params)
        optimizer.update()
        return loss.detach()

    def _advance(self, optimizer: AdamWWithWarmup) -> None:
        """After a stage: the run stands at the next stage's step 0, or is done."""
        position = self.order.index(self.stage)
        if position + 1 < len(self.order):
            self.stage, self.step = self.order[position + 1], 0
            self.save_state(None)
        else:
            self.stage = Stage.DONE
            self.save_state(optimizer)

    def _report(self, pending: list[torch.Tensor], total: int, lr: float) -> None:
        """Progress; losses are read back from the device only every `log_every` steps, so the
        loop does not wait on the GPU at each step."""
        if self.step % max(1, self.settings.log_every) == 0 or self.step == total:
            losses = torch.stack(pending).float()
            if self.ctx.is_distributed:  # the global batch's loss: the mean of the processes' means
                dist.all_reduce(losses)
                losses /= self.ctx.world_size
            values = losses.cpu().tolist()
            if self.ctx.is_main:
                self.run.log_losses(self.stage, self.step - len(values) + 1, values)
            pending.clear()
            self.on_event(StepDone(self.stage, self.step, total, loss=values[-1], lr=lr))
        else:
            self.on_event(StepDone(self.stage, self.step, total))

    def _save_checkpoint(self, adapters: AdapterSet) -> None:
        if self.ctx.is_main:
            save_tensors(self.checkpoint_path(self.step), adapters.adapter_state_dict())
        self.checkpoints.append(self.step)
        self.on_event(CheckpointSaved(self.stage, self.step, str(self.run.folder)))

    def checkpoint_path(self, step: int) -> Path:
        return self.run.folder / "checkpoints" / f"adapter-step{step}.safetensors"

    def checkpoint_files(self) -> dict[str, Path]:
        """The adapter checkpoints this run kept, by registry tag (`stepK`)."""
        return {f"step{s}": self.checkpoint_path(s) for s in self.checkpoints}

    def save_state(self, optimizer: AdamWWithWarmup | None) -> None:
        """Everything `--resume` needs to go on exactly where the run stands (identical on
        every process, so rank 0's is the run's)."""
        if not self.ctx.is_main:
            return
        tensors: dict[str, torch.Tensor] = {}
        for name, trainable in self._kept.items():
            if isinstance(trainable, AdapterSet):
                tensors.update({f"{name}.{k}": v for k, v in trainable.adapter_state_dict().items()})
            else:
                tensors[name] = trainable.detach()
        opt_tensors, opt_scalars = optimizer.state() if optimizer is not None else ({}, None)
        stream_tensors, stream_meta = self.streams.state()
        meta = {"stage": str(self.stage), "step": self.step, "optimizer": opt_scalars, "checkpoints": self.checkpoints}
        self.run.save_state({**tensors, **stream_tensors, **opt_tensors}, {**meta, **stream_meta})

    def write_preview(self, label: str, prompt: str, frames: int, *, release_text: bool = True) -> Path:
        """A short video with the adapters as they stand, kept as `previews/<label>.png`. Every
        process samples it (a sharded denoiser needs them all); rank 0 keeps it."""
        path = write_preview(
            self.parts, self.backbone, self.run, label, prompt, frames, self.on_event, release_text, self.ctx.is_main
        )
        use(self.parts, "denoiser", experts=self.experts)  # the VAE (and any other expert) back to the host
        return path

    def publish(
        self,
        registry: Registry,
        name: str,
        adapters: AdapterSet,
        *,
        inputs: list[Path],
        fields: dict[str, Any],
        reference_images: list[tuple[Path, Image.Image]],
        preview: Image.Image,
        extra_tensors: dict[str, torch.Tensor] | None = None,
    ) -> Manifest:
        """The loss curve beside the run's log, then the run's result as a new registry version
        of `name` (its checkpoints as `stepK` tags), recording the settings, the seed, the
        inputs' digest and how long the run took. Rank 0 stores it, once every process has
        finished; the others return its manifest."""
        self.ctx.barrier()  # every process finished its last step: a failed one commits nothing
        manifest = None
        if self.ctx.is_main:
            self.run.save_loss_plot()
            training = {**asdict(self.settings), "run": self.run.id, **fields.get("training", {})}  # type: ignore[call-overload]
            manifest = store_adapter(
                registry,
                kind=self.kind,  # type: ignore[arg-type]
                name=name,
                backbone=self.backbone,
                adapters=adapters,
                extra_tensors=extra_tensors,
                checkpoints=self.checkpoint_files(),
                fields={
                    **{k: v for k, v in fields.items() if k != "training"},
                    "training": training,
                    "seed": self.settings.seed,
                    "dataset_digest": media.dataset_digest(inputs),
                    "duration_s": round(time.monotonic() - self.started, 2),
                    "description": self.settings.description,
                },
                reference_images=reference_images,
                preview=preview,
            )
        manifest = self.ctx.broadcast_object(manifest)
        self.ctx.close(together=True)  # the run is over: leave the process group
        return manifest  # type: ignore[return-value]


def _every(period: int, step: int) -> bool:
    """Whether `step` is a multiple of `period` (0: never)."""
    return bool(period) and step % period == 0
