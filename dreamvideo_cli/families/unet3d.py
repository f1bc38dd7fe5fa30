"""diffusers' UNet3DConditionModel as a denoiser family (ModelScopeT2V and its kin).

DreamVideo's placement, from the authors' code: identity adapters beside the
cross-attention (attn2) of every spatial transformer block; motion adapters beside attn1,
attn2 and the feed-forward of every temporal transformer block. Each adapter reads the
block's input before the sub-layer's LayerNorm and is added to the sub-layer's output:
    x = sublayer(norm(x)) + x + adapter(x)
Nothing in these blocks is modulated or gated, so the wiring is exact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dreamvideo_cli.backbone import (
    AdapterKind,
    AdapterSite,
    AdapterSlot,
    CheckpointTarget,
    DenoiserFamily,
)

IDENTITY_SLOTS: tuple[AdapterSlot, ...] = (AdapterSlot("attn2", "norm2"),)
MOTION_SLOTS: tuple[AdapterSlot, ...] = (
    AdapterSlot("attn1", "norm1"),
    AdapterSlot("attn2", "norm2"),
    AdapterSlot("ff", "norm3"),
)
# CUDA's grid y/z limit is 65535; SDPA launches one block row per (batch*head) pair.
TEMPORAL_ATTENTION_CHUNK = 16384
# Sub-module lists of the down, mid and up blocks that gradient checkpointing re-runs.
_CHECKPOINTED_LISTS = ("resnets", "temp_convs", "attentions", "temp_attentions")


def slots_for(kind: AdapterKind) -> tuple[AdapterSlot, ...]:
    return IDENTITY_SLOTS if kind == "identity" else MOTION_SLOTS


def find_adapter_sites(unet: nn.Module) -> list[AdapterSite]:
    """Every spatial transformer block with cross-attention (identity) and every temporal
    transformer block (motion) of a diffusers UNet3D, in module order."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    sites: list[AdapterSite] = []
    for name, module in unet.named_modules():
        if isinstance(module, TransformerTemporalModel):
            kind: AdapterKind = "motion"
        elif isinstance(module, Transformer2DModel):
            kind = "identity"
        else:
            continue
        for i, block in enumerate(module.transformer_blocks):
            if kind == "identity" and (block.attn2 is None or block.only_cross_attention):
                continue
            width = int(block.attn1.query_dim)
            sites.append(AdapterSite(f"{name}.transformer_blocks.{i}", kind, width, slots_for(kind)))
    return sites


def _blocks(unet: nn.Module) -> list[nn.Module]:
    blocks = [*getattr(unet, "down_blocks", []), *getattr(unet, "up_blocks", [])]
    if getattr(unet, "mid_block", None) is not None:
        blocks.append(unet.mid_block)
    return blocks


class ChunkedAttnProcessor:
    """Self-attention over at most `chunk` sequences at a time (the result is identical:
    sequences of a temporal transformer never attend to each other)."""

    def __init__(self, inner: Any, chunk: int = TEMPORAL_ATTENTION_CHUNK) -> None:
        self.inner = inner
        self.chunk = chunk

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
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


class UNet3DFamily(DenoiserFamily):
    name = "unet3d"

    def denoise(
        self, model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        out: torch.Tensor = model(latents, timestep, encoder_hidden_states=context).sample
        return out

    def adapter_sites(self, denoiser: nn.Module) -> list[AdapterSite]:
        return find_adapter_sites(denoiser)

    def checkpoint_targets(self, denoiser: nn.Module) -> list[CheckpointTarget]:
        """Each resnet, temporal conv and (spatial or temporal) transformer of every block,
        and the input temporal transformer: diffusers' UNet3D refuses its own checkpointing."""
        targets: list[CheckpointTarget] = []
        for block in _blocks(denoiser):
            for name in _CHECKPOINTED_LISTS:
                layers: Any = getattr(block, name, None)
                if isinstance(layers, nn.ModuleList):
                    targets.extend((layers, i) for i in range(len(layers)))
        if getattr(denoiser, "transformer_in", None) is not None:
            targets.append((denoiser, "transformer_in"))
        return targets

    def prepare(self, denoiser: nn.Module, device: torch.device) -> None:
        """Chunked temporal attention on CUDA: a temporal transformer attends over
        batch*height*width sequences, and at large batches SDPA's CUDA grid overflows."""
        if device.type == "cuda":
            chunk_temporal_attention(denoiser)


UNET3D = UNet3DFamily()
