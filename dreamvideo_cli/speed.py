"""Memory and launch-overhead measures that leave the math unchanged.

- Gradient checkpointing of the layers a denoiser family names (diffusers' UNet3D refuses
  its own: each resnet, temporal conv and transformer is re-run in the backward pass; a
  DiT re-runs each block) instead of keeping their activations.
- `torch.compile` of the denoiser (`--compile`).
UNet3D's chunked temporal attention is a family measure (`families.unet3d`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dreamvideo_cli.backbone import DenoiserFamily


class Checkpointed(nn.Module):
    """Runs `module` under activation checkpointing while gradients are being recorded."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            return checkpoint(self.module, *args, use_reentrant=False, **kwargs)
        return self.module(*args, **kwargs)


@contextmanager
def gradient_checkpointing(denoiser: nn.Module, family: DenoiserFamily, *, enabled: bool = True) -> Iterator[None]:
    """Wrap the layers the denoiser's family names (`checkpoint_targets`) in `Checkpointed`
    for the duration of the block.

    Attach adapters *before* entering (their site paths are those of the plain denoiser)
    and detach them after leaving."""
    if not enabled:
        yield
        return
    wrapped: list[tuple[Any, str | int, nn.Module]] = []
    for parent, key in family.checkpoint_targets(denoiser):
        layer = parent[key] if isinstance(key, int) else getattr(parent, key)
        if isinstance(key, int):
            parent[key] = Checkpointed(layer)
        else:
            setattr(parent, key, Checkpointed(layer))
        wrapped.append((parent, key, layer))
    try:
        yield
    finally:
        for parent, key, layer in reversed(wrapped):
            if isinstance(key, int):
                parent[key] = layer
            else:
                setattr(parent, key, layer)


COMPILE_BACKEND_ENV = "DV_COMPILE_BACKEND"  # tests use "aot_eager": traced, no code generation


def compiled_denoiser(denoiser: nn.Module, enabled: bool, device: torch.device, cuda_graphs: bool = True) -> nn.Module:
    """The denoiser behind `torch.compile` when `enabled` (`--compile`), else the denoiser itself.

    Every training step has the same shapes, so one compiled graph serves the whole run; on
    CUDA, inductor's "reduce-overhead" mode also replays it as a CUDA graph, which removes
    the per-kernel launch cost that bounds the subject stage (docs/benchmarks.md). The
    wrapper calls the same module, so adapters attached later are traced in (one recompile).
    The first steps pay the compilation; it pays off only over hundreds of steps.
    `cuda_graphs=False`: inductor's code without CUDA graphs, for a denoiser whose weights
    move between steps (a graph replays the addresses it recorded)."""
    if not enabled:
        return denoiser
    backend = os.environ.get(COMPILE_BACKEND_ENV, "inductor")
    mode = "reduce-overhead" if backend == "inductor" and device.type == "cuda" and cuda_graphs else None
    compiled: nn.Module = torch.compile(denoiser, backend=backend, mode=mode, dynamic=False)  # type: ignore[assignment]
    return compiled
