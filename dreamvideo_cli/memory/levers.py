"""The memory levers that make a run fit a card: fp8 storage of the frozen denoiser's linear
weights (`--fp8`), block swap (`--blocks-to-swap N`) and activation offload
(`--offload-activations`).

    parts = backbone.load(device, dtype)
    prepare_denoiser(parts)
    if levers.fp8:
        store_fp8(parts)                       # in place, once, before adapters are attached
    adapters.attach(parts.denoiser)
    with levers_applied(parts, levers), gradient_checkpointing(...):
        ...training steps, previews, sampling...

Block swap and activation offload change where tensors live, never a result: adapters learnt
with them equal those learnt without (tests). fp8 changes the frozen weights by e4m3 rounding
(fp8.py; the error of one forward is measured by scripts/fp8_error.py).

`host` is where the host side lives: a real CPU in a run, the planner's fake host device
(`PLANNING_DEVICES`: fake "meta" tensors) in a plan, so the same code paths are measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dreamvideo_cli.backbone import Components
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.memory.block_swap import BlockSwap, SwapToken
from dreamvideo_cli.memory.fp8 import convert_linears
from dreamvideo_cli.memory.offload import ActivationOffload, Offloaded

__all__ = ["AppliedLevers", "MemoryLevers", "apply_levers", "check_combination", "levers_applied", "store_fp8"]


@dataclass(frozen=True)
class MemoryLevers:
    fp8: bool = False  # scaled e4m3 storage of the frozen denoiser's linear weights, bf16/fp32 compute
    blocks_to_swap: int = 0  # frozen weights of N blocks live in (pinned) host memory, streamed in one block ahead
    offload_activations: bool = False  # tensors saved for backward go to host memory

    def __post_init__(self) -> None:
        if self.blocks_to_swap < 0:
            raise ValueError(f"blocks_to_swap must be >= 0, not {self.blocks_to_swap}")

    def flags(self) -> list[str]:
        """The command-line flags that ask for these levers, e.g. ["--fp8", "--blocks-to-swap", "4"]."""
        out: list[str] = []
        if self.fp8:
            out.append("--fp8")
        if self.blocks_to_swap:
            out += ["--blocks-to-swap", str(self.blocks_to_swap)]
        if self.offload_activations:
            out.append("--offload-activations")
        return out


def check_combination(
    *, shard: bool, fp8: bool, blocks_to_swap: int, offload_activations: bool, compile: bool = False
) -> None:
    """Refuse, in one line, the levers that do not work together yet (the trainer and the
    planner ask the same)."""
    if shard and (fp8 or blocks_to_swap or offload_activations):
        # FSDP2 gathers each block's weights as new tensors: activation offload would not know
        # them for weights and would copy them to the host at every step.
        raise DVError(
            "--shard does not combine with --fp8, --blocks-to-swap or --offload-activations yet",
            "shard alone (with --gradient-checkpointing) over more processes, or use the levers on one process",
        )
    if compile and blocks_to_swap:
        raise DVError(
            "--compile does not combine with --blocks-to-swap (swapped weights change under the compiled graph)",
            "leave out one of them",
        )
    if compile and offload_activations:
        raise DVError(
            "--compile does not combine with --offload-activations (its hooks are not traced into the compiled graph)",
            "leave out one of them",
        )


def store_fp8(parts: Components) -> int:
    """Store the frozen denoiser's block linears as scaled e4m3, in place; returns the bytes
    saved. Call right after loading (and `prepare_denoiser`), before attaching adapters and
    before `levers_applied`; the parts stay converted (a `BackboneCache` must key on it)."""
    return convert_linears(parts.denoiser, parts.family)


@dataclass(frozen=True)
class AppliedLevers:
    """What `apply_levers` installed: for tests and the planner (host bytes, events)."""

    swap: BlockSwap | None
    offload: ActivationOffload | None


@contextmanager
def levers_applied(parts: Components, levers: MemoryLevers, *, host: torch.device | None = None) -> Iterator[None]:
    """Block swap and activation offload for the duration (training steps and sampling under
    no_grad alike), undone after. fp8 is not applied here (`store_fp8`, once after loading)."""
    with apply_levers(parts, levers, host=host):
        yield


@contextmanager
def apply_levers(
    parts: Components,
    levers: MemoryLevers,
    *,
    host: torch.device | None = None,
    record: bool = False,
    swap_copies: bool | None = None,
) -> Iterator[AppliedLevers]:
    """`levers_applied`, giving what it installed. For tests: `record` keeps block swap's
    events; `swap_copies=True` copies swapped units even when the device is the host."""
    host = torch.device("cpu") if host is None else torch.device(host)
    with ExitStack() as stack:
        swap = None
        if levers.blocks_to_swap:
            swap = BlockSwap(
                parts.denoiser, parts.family, levers.blocks_to_swap, parts.device, host, copy=swap_copies, record=record
            )
            stack.enter_context(swap)
        offload = ActivationOffload(parts.denoiser, parts.device, host) if levers.offload_activations else None
        if swap is not None or offload is not None:
            stack.enter_context(_saved_tensor_routing(parts.denoiser, swap, offload))
        yield AppliedLevers(swap, offload)


@contextmanager
def _saved_tensor_routing(
    denoiser: nn.Module, swap: BlockSwap | None, offload: ActivationOffload | None
) -> Iterator[None]:
    """Saved-tensor hooks around each forward of the denoiser: a tensor on a swapped unit's
    weights becomes a token (block swap), any other activation goes to the host (offload).
    Scoped to the denoiser's forward so the loss, the text encoder and the optimizer are left
    alone; one pair for both levers because only the innermost pair of hooks applies."""

    def pack(t: torch.Tensor) -> Any:
        if swap is not None:
            token = swap.pack(t)
            if token is not None:
                return token
        if offload is not None:
            packed = offload.pack(t)
            if packed is not None:
                return packed
        return t

    def unpack(packed: Any) -> torch.Tensor:
        if isinstance(packed, SwapToken):
            assert swap is not None
            return swap.unpack(packed)
        if isinstance(packed, Offloaded):
            assert offload is not None
            return offload.unpack(packed)
        result: torch.Tensor = packed
        return result

    active: list[torch.autograd.graph.saved_tensors_hooks] = []

    def begin(module: nn.Module, args: Any) -> None:
        if offload is not None:
            offload.begin_pass()
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, unpack)
        hooks.__enter__()
        active.append(hooks)

    def end(module: nn.Module, args: Any, output: Any) -> None:
        if active:
            active.pop().__exit__(None, None, None)
        if offload is not None:
            offload.end_pass()

    handles = [
        denoiser.register_forward_pre_hook(begin),
        denoiser.register_forward_hook(end, always_call=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
