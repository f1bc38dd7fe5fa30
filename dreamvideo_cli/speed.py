"""Memory and launch-overhead measures that leave the math unchanged.

- Gradient checkpointing for diffusers' UNet3D, which refuses it out of the box: each
  resnet, temporal conv and (spatial or temporal) transformer of every block is re-run in
  the backward pass instead of keeping its activations.
- Chunked temporal attention: a temporal transformer attends over batch*height*width
  sequences; at large batches SDPA's CUDA grid overflows ("invalid argument"), so the
  batch of sequences is split.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# CUDA's grid y/z limit is 65535; SDPA launches one block row per (batch*head) pair.
TEMPORAL_ATTENTION_CHUNK = 16384


class Checkpointed(nn.Module):
    """Runs `module` under activation checkpointing while gradients are being recorded."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            return checkpoint(self.module, *args, use_reentrant=False, **kwargs)
        return self.module(*args, **kwargs)


_CHECKPOINTED_LISTS = ("resnets", "temp_convs", "attentions", "temp_attentions")


def _blocks(unet: nn.Module) -> list[nn.Module]:
    blocks = [*getattr(unet, "down_blocks", []), *getattr(unet, "up_blocks", [])]
    if getattr(unet, "mid_block", None) is not None:
        blocks.append(unet.mid_block)
    return blocks


@contextmanager
def gradient_checkpointing(unet: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Wrap the UNet's layers in `Checkpointed` for the duration of the block.

    Attach adapters *before* entering (their site paths are those of the plain UNet) and
    detach them after leaving."""
    if not enabled:
        yield
        return
    wrapped: list[tuple[nn.ModuleList, int, nn.Module]] = []
    for block in _blocks(unet):
        for name in _CHECKPOINTED_LISTS:
            layers = getattr(block, name, None)
            if not isinstance(layers, nn.ModuleList):
                continue
            for i, layer in enumerate(layers):
                layers[i] = Checkpointed(layer)
                wrapped.append((layers, i, layer))
    transformer_in = getattr(unet, "transformer_in", None)
    if transformer_in is not None:
        unet.transformer_in = Checkpointed(transformer_in)
    try:
        yield
    finally:
        for layers, i, layer in wrapped:
            layers[i] = layer
        if transformer_in is not None:
            unet.transformer_in = transformer_in


class ChunkedAttnProcessor:
    """Self-attention over at most `chunk` sequences at a time (the result is identical:
    sequences of a temporal transformer never attend to each other)."""

    def __init__(self, inner: Any, chunk: int = TEMPORAL_ATTENTION_CHUNK) -> None:
        self.inner = inner
        self.chunk = chunk

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None, attention_mask: Any = None, **kwargs: Any) -> torch.Tensor:
        if hidden_states.shape[0] <= self.chunk or encoder_hidden_states is not None or attention_mask is not None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)
        parts = [self.inner(attn, h, None, None, **kwargs) for h in hidden_states.split(self.chunk)]
        return torch.cat(parts)


def chunk_temporal_attention(unet: nn.Module, chunk: int = TEMPORAL_ATTENTION_CHUNK) -> int:
    """Give every temporal transformer's attention a chunking processor; returns how many."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    count = 0
    for module in unet.modules():
        if not isinstance(module, TransformerTemporalModel):
            continue
        for attn in module.modules():
            if isinstance(attn, Attention) and not isinstance(attn.processor, ChunkedAttnProcessor):
                attn.set_processor(ChunkedAttnProcessor(attn.processor, chunk))  # type: ignore[arg-type]
                count += 1
    return count


COMPILE_BACKEND_ENV = "DV_COMPILE_BACKEND"  # tests use "aot_eager": traced, no code generation


def compiled_unet(unet: nn.Module, enabled: bool, device: torch.device) -> nn.Module:
    """The UNet behind `torch.compile` when `enabled` (`--compile`), else the UNet itself.

    Every training step has the same shapes, so one compiled graph serves the whole run; on
    CUDA, inductor's "reduce-overhead" mode also replays it as a CUDA graph, which removes
    the per-kernel launch cost that bounds the subject stage (docs/benchmarks.md). The
    wrapper calls the same module, so adapters attached later are traced in (one recompile).
    The first steps pay the compilation; it pays off only over hundreds of steps."""
    if not enabled:
        return unet
    backend = os.environ.get(COMPILE_BACKEND_ENV, "inductor")
    mode = "reduce-overhead" if backend == "inductor" and device.type == "cuda" else None
    compiled: nn.Module = torch.compile(unet, backend=backend, mode=mode, dynamic=False)  # type: ignore[assignment]
    return compiled
