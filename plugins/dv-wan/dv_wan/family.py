"""Wan 2.1's diffusion transformer as a dv denoiser family: where DreamVideo's adapters go
in a DiT block, how the transformer is called, its causal video VAE and its T5 text.

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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dreamvideo_cli.backbone import AdapterSite, AdapterSlot, CheckpointTarget, DenoiserFamily
from dreamvideo_cli.codecs import LatentCodec, to_uint8_frames
from dv_wan import configs

IDENTITY_SLOTS = (AdapterSlot("attn2", "norm2", norm_in_fp32=True),)
MOTION_SLOTS = (AdapterSlot("attn1"), AdapterSlot("ffn"))


class WanFamily(DenoiserFamily):
    name = "wan-dit"

    def denoise(
        self, model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
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


WAN = WanFamily()


class WanVideoCodec(LatentCodec):
    """AutoencoderKLWan: 8x spatial, 4x temporal with the first frame alone, latents
    normalised per channel with the config's latents_mean / latents_std. Runs in fp32."""

    temporal_factor = configs.VAE_TEMPORAL_FACTOR

    def __init__(self, vae: Any, image_chunk: int = 8) -> None:
        self.vae = vae
        config = vae.config
        self.channels = int(config.z_dim)
        self.spatial_factor = int(getattr(config, "scale_factor_spatial", configs.VAE_SPATIAL_FACTOR))
        self.temporal_factor = int(getattr(config, "scale_factor_temporal", configs.VAE_TEMPORAL_FACTOR))
        self.mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(-1, 1, 1, 1)  # [C, 1, 1, 1]
        self.std = torch.tensor(config.latents_std, dtype=torch.float32).view(-1, 1, 1, 1)
        self.image_chunk = image_chunk

    def _device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        # video [B, 3, F, H, W] in [0, 1] -> normalised latents [B, C, F', h, w]
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
