"""Wan's diffusion transformer as a dv denoiser family: where DreamVideo's adapters go in a
DiT block, how the transformer is called, and its causal video VAEs (Wan 2.1's and Wan 2.2's).

A Wan block (diffusers `WanTransformerBlock`), with m = LN(x)(1 + scale) + shift from the
timestep (adaLN, computed in the block's forward, outside the norm modules):
    x = x + gate_msa * attn1(m_msa)          self-attention over all F' x h x w tokens
    x = x + attn2(norm2(x), text)            cross-attention, affine LayerNorm, no gate
    x = x + gate_ff * ffn(m_ff)              feed-forward
Identity adapters: beside attn2, reading x before norm2 and added to its output, exactly
DreamVideo's placement (nothing is modulated or gated there). Motion adapters: beside
attn1 and ffn, reading the modulated tokens m the sub-layer reads and added to its output
before the gate, as DualReal places its adapters on CogVideoX. Reading x instead would
bypass adaLN: the adapter would see the same input at every noise level while the block
it corrects sees a rescaled one, and its output would escape the gate that keeps each
block's update in proportion; before the gate, the adapter's correction is scaled exactly
as the sub-layer's own output. Both wirings are exact at zero (`AdapterSlot`).

Motion has no separate temporal layers here: attn1 attends across frames and positions at
once, so the motion adapters sit where frames meet (attn1) and where each token's features
are transformed (ffn); attn2 stays the identity adapter's, so a subject and a motion
compose without sharing a sub-layer.

Wan 2.2 TI2V-5B has the same block and is called with one timestep per token, as WanPipeline
does with `expand_timesteps` (`WanTokenTimestepFamily`): each token then gets its own adaLN
shift, scale and gate (`temb` of shape [B, L, 6, D] in the block), which the motion adapters
see through the sub-layers they wrap, so their placement carries over unchanged.

Wan 2.2 T2V-A14B is two such transformers (`WanExperts`: `high` and `low`, Wan 2.1-14B's
layout each), the high-noise expert for model timesteps t >= boundary, the low-noise one
below (`WanExpertsFamily`). Each expert's sites are its own blocks' under its path prefix, so
adapters attach to one expert or both.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from dreamvideo_cli.backbone import AdapterSite, AdapterSlot, CheckpointTarget, DenoiserFamily, Expert
from dreamvideo_cli.codecs import LatentCodec, to_uint8_frames
from dreamvideo_cli.errors import DVError
from dv_wan import configs

IDENTITY_SLOTS = (AdapterSlot("attn2", "norm2", norm_in_fp32=True),)
MOTION_SLOTS = (AdapterSlot("attn1"), AdapterSlot("ffn"))


def token_timesteps(model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """Timesteps [B] -> [B, L], one per token of the patchified latents, built as WanPipeline
    builds them with `expand_timesteps`: a float32 mask of ones over the latent grid, taken
    at every patch's first position, times t. For text-to-video the mask is all ones, so every
    token of a sample gets that sample's t (image-to-video would zero the first frame's)."""
    config: Any = model.config
    p_t, p_h, p_w = config.patch_size
    frames, height, width = latents.shape[2:]
    mask = torch.ones(frames, height, width, dtype=torch.float32, device=latents.device)
    grid = mask[::p_t, ::p_h, ::p_w].flatten()  # [L]
    return grid.unsqueeze(0) * timestep.view(-1, 1)  # [B, L]


class WanFamily(DenoiserFamily):
    name = "wan-dit"
    # WanPipeline's `expand_timesteps` (Wan 2.2 TI2V-5B): one timestep per token, not per sample.
    per_token_timesteps: ClassVar[bool] = False

    def denoise(
        self, model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        if self.per_token_timesteps:
            timestep = token_timesteps(model, latents, timestep)
        out: torch.Tensor = model(
            hidden_states=latents, timestep=timestep, encoder_hidden_states=context, return_dict=False
        )[0]
        return out

    def adapter_sites(self, denoiser: nn.Module) -> list[AdapterSite]:
        config: Any = denoiser.config
        width = int(config.num_attention_heads * config.attention_head_dim)
        blocks: Any = denoiser.blocks
        sites = [AdapterSite(f"blocks.{i}", "identity", width, IDENTITY_SLOTS) for i in range(len(blocks))]
        sites += [AdapterSite(f"blocks.{i}", "motion", width, MOTION_SLOTS) for i in range(len(blocks))]
        return sites

    def checkpoint_targets(self, denoiser: nn.Module) -> list[CheckpointTarget]:
        blocks: Any = denoiser.blocks
        return [(blocks, i) for i in range(len(blocks))]


class WanTokenTimestepFamily(WanFamily):
    """Wan 2.2 TI2V-5B: Wan's blocks, called with per-token timesteps."""

    name = "wan-dit-token-t"
    per_token_timesteps = True


class WanExperts(nn.Module):
    """Two Wan transformers of one layout as one denoiser: `high` denoises timesteps
    t >= `boundary` (a model timestep: boundary_ratio x num_train_timesteps), `low` those
    below, compared as WanPipeline compares the scheduler's shifted t with its
    `boundary_timestep`. Each row of a batch goes to its expert; a batch of one expert (every
    sampling step) is one call of that expert, as in the pipeline."""

    def __init__(self, high: nn.Module, low: nn.Module, boundary: float) -> None:
        super().__init__()
        self.high = high
        self.low = low
        self.boundary = boundary

    @property
    def config(self) -> Any:
        """The experts' shared layout (the high-noise expert's config)."""
        return self.high.config

    @staticmethod
    def _call(expert: nn.Module, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = expert(
            hidden_states=latents, timestep=timestep, encoder_hidden_states=context, return_dict=False
        )[0]
        return out

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        from torch._subclasses.fake_tensor import is_fake

        if is_fake(timestep):  # dv plan: no values to route by; both experts have the same shapes
            return self._call(self.high, latents, timestep, context)
        high = timestep >= self.boundary  # [B]
        if bool(high.all()):
            return self._call(self.high, latents, timestep, context)
        if not bool(high.any()):
            return self._call(self.low, latents, timestep, context)
        low = ~high
        out_high = self._call(self.high, latents[high], timestep[high], context[high])
        out_low = self._call(self.low, latents[low], timestep[low], context[low])
        out = out_high.new_empty((latents.shape[0], *out_high.shape[1:]))
        out[high], out[low] = out_high, out_low.to(out.dtype)
        return out


class WanExpertsFamily(WanFamily):
    """Wan 2.2 T2V-A14B's two experts (`WanExperts`) behind one denoiser."""

    name = "wan-dit-experts"

    def __init__(self, boundary: float) -> None:
        self.boundary = boundary

    def experts(self) -> tuple[Expert, ...]:
        return (Expert("high", "high", start=self.boundary), Expert("low", "low", end=self.boundary))

    def denoise(
        self, model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        out: torch.Tensor = model(latents, timestep, context)  # WanExperts routes each row
        return out

    def adapter_sites(self, denoiser: nn.Module) -> list[AdapterSite]:
        sites: list[AdapterSite] = []
        for expert in self.experts():
            own = super().adapter_sites(denoiser.get_submodule(expert.path))
            sites += [replace(s, path=f"{expert.path}.{s.path}") for s in own]
        return sites

    def checkpoint_targets(self, denoiser: nn.Module) -> list[CheckpointTarget]:
        targets: list[CheckpointTarget] = []
        for expert in self.experts():
            targets += super().checkpoint_targets(denoiser.get_submodule(expert.path))
        return targets


WAN = WanFamily()
WAN22_TI2V = WanTokenTimestepFamily()
# T2V-A14B: boundary_ratio (configs) times the scheduler's num_train_timesteps, as WanPipeline.
WAN22_A14B_BOUNDARY = configs.A14B_BOUNDARY_RATIO * configs.SCHEDULER_CONFIG["num_train_timesteps"]
WAN22_A14B = WanExpertsFamily(WAN22_A14B_BOUNDARY)


class WanVideoCodec(LatentCodec):
    """AutoencoderKLWan: Wan 2.1's (8x spatial) or Wan 2.2's (a 2x2 pixel patchify, then 8x:
    16x), 4x temporal with the first frame alone, latents normalised per channel with the
    config's latents_mean / latents_std. Runs in fp32.

    `size_multiple`: the pixel sizes the model takes are multiples of this (the VAE's factor
    times the transformer's 2x2 patch, as WanPipeline rounds them); other sizes are refused
    in one line naming the nearest valid ones, with `label` naming the model. None takes any
    size (Wan 2.1 as it was)."""

    temporal_factor = configs.VAE_TEMPORAL_FACTOR

    def __init__(
        self, vae: Any, image_chunk: int = 8, size_multiple: int | None = None, label: str = "this Wan"
    ) -> None:
        self.vae = vae
        config = vae.config
        self.channels = int(config.z_dim)
        self.spatial_factor = int(getattr(config, "scale_factor_spatial", configs.VAE_SPATIAL_FACTOR))
        self.temporal_factor = int(getattr(config, "scale_factor_temporal", configs.VAE_TEMPORAL_FACTOR))
        self.mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(-1, 1, 1, 1)  # [C, 1, 1, 1]
        self.std = torch.tensor(config.latents_std, dtype=torch.float32).view(-1, 1, 1, 1)
        self.image_chunk = image_chunk
        self.size_multiple = size_multiple
        self.label = label

    def check_size(self, height: int, width: int) -> None:
        """Refuse, in one line, a size that is not a multiple of `size_multiple`."""
        step = self.size_multiple
        if step is None or (height % step == 0 and width % step == 0):
            return
        wrong = [(name, v) for name, v in (("height", height), ("width", width)) if v % step]
        nearest = ", ".join(f"{name} {nearest_multiples(v, step)}" for name, v in wrong)
        patch = step // self.spatial_factor
        raise DVError(
            f"height {height}, width {width} does not fit {self.label}: its sizes are multiples of {step} "
            f"(the VAE's {self.spatial_factor}x times the transformer's {patch}x{patch} patch)",
            f"use {nearest}",
        )

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        self.check_size(height, width)
        return super().latent_size(height, width)

    def _device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        # video [B, 3, F, H, W] in [0, 1] -> normalised latents [B, C, F', h, w]
        self.check_size(*video.shape[-2:])
        device = self._device()
        z = self.vae.encode(video.to(device, torch.float32) * 2 - 1).latent_dist.mean.float()
        return (z - self.mean.to(device)) / self.std.to(device)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        chunks = [
            self._encode(pixels[s : s + self.image_chunk].unsqueeze(2)) for s in range(0, len(pixels), self.image_chunk)
        ]
        return torch.cat(chunks)  # [N, C, 1, h, w]

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        return self._encode(frames.permute(1, 0, 2, 3).unsqueeze(0))[0]  # [C, F', h, w]

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor) -> np.ndarray:
        device = self._device()
        z = latents.to(device, torch.float32) * self.std.to(device) + self.mean.to(device)
        video = self.vae.decode(z.unsqueeze(0)).sample[0]  # [3, F, H, W] in [-1, 1]
        return to_uint8_frames(video.permute(1, 0, 2, 3))


def nearest_multiples(value: int, step: int) -> str:
    """The multiples of `step` on either side of `value`, e.g. "704 or 736" for 720 and 32."""
    lower = value // step * step
    return f"{lower} or {lower + step}" if lower else str(step)
