"""Latent codecs: frames or photos <-> the normalised latents a denoiser works on.

Pixels come in as float [N, 3, H, W] in [0, 1]; latents are float32 [C, F', h, w] for a
video and [N, C, 1, h, w] for N photos (each photo a one-frame video). A codec states its
spatial factor (H / h) and temporal factor: 1 for per-frame VAEs (ModelScope's), 4 for
causal video VAEs that keep the first frame alone (Wan's: F' = 1 + (F - 1) // 4).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """[F, 3, H, W] in [-1, 1] -> uint8 [F, H, W, 3] on the CPU."""
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class LatentCodec(ABC):
    channels: int
    spatial_factor: int
    temporal_factor: int = 1

    def latent_frames(self, frames: int) -> int:
        """F' for F frames."""
        if self.temporal_factor == 1:
            return frames
        return 1 + (frames - 1) // self.temporal_factor

    def frames_for(self, latent_frames: int) -> int:
        """F for F' latent frames (the frame counts a temporal codec accepts: k * factor + 1)."""
        if self.temporal_factor == 1:
            return latent_frames
        return (latent_frames - 1) * self.temporal_factor + 1

    def accepts_frames(self, frames: int) -> bool:
        return frames >= 1 and self.frames_for(self.latent_frames(frames)) == frames

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.spatial_factor, width // self.spatial_factor

    @abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Photos [N, 3, H, W] -> latents [N, C, 1, h, w], each photo a one-frame video."""

    @abstractmethod
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """One clip's frames [F, 3, H, W] -> latents [C, F', h, w]."""

    @abstractmethod
    def decode_video(self, latents: torch.Tensor) -> np.ndarray:
        """Latents [C, F', h, w] -> uint8 frames [F, H, W, 3]."""

    def mask_latents(self, masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Subject masks [N, 1, H, W] in {0, 1} -> loss weights on latents [N, 1 or C, h, w].

        A latent cell of a real VAE mixes every pixel under it, so it counts as subject if
        any pixel under it is (the authors' choice: the loss keeps the subject's edges)."""
        return F.adaptive_max_pool2d(masks, size)


class FrameVAECodec(LatentCodec):
    """A per-frame image VAE (diffusers AutoencoderKL, or anything with its `encode(x)
    .latent_dist.mean` / `decode(z).sample` interface) with one scalar scaling factor."""

    def __init__(
        self,
        vae: Any,
        scale_factor: float,
        spatial_factor: int | None = None,
        channels: int | None = None,
        exact_masks: Callable[[torch.Tensor], torch.Tensor] | None = None,
        encode_chunk: int = 16,
        decode_chunk: int = 8,
    ) -> None:
        self.vae = vae
        self.scale_factor = scale_factor
        config: Any = getattr(vae, "config", None)
        self.spatial_factor = spatial_factor or int(2 ** (len(config.block_out_channels) - 1))
        self.channels = channels or int(config.latent_channels)
        # A space-to-depth VAE's latent channels are pixels: it maps masks exactly, so no
        # photo background leaks into the subject's edge cells.
        self.exact_masks = exact_masks
        self.encode_chunk = encode_chunk
        self.decode_chunk = decode_chunk

    @torch.no_grad()
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> scaled latents [N, C, h, w], fp32, `encode_chunk` frames at a time.

        Training reads these from a cache made once per run, so the posterior mean stands
        in for a fresh sample each step (the VAE's posterior std is tiny)."""
        out = []
        for start in range(0, pixels.shape[0], self.encode_chunk):
            x = pixels[start : start + self.encode_chunk].to(self._device(), self.vae.dtype) * 2 - 1
            out.append(self.vae.encode(x).latent_dist.mean.float() * self.scale_factor)
        return torch.cat(out)

    def _device(self) -> torch.device:
        for tensor in (*self.vae.parameters(), *self.vae.buffers()):
            return tensor.device
        return torch.device("cpu")

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encode_frames(pixels).unsqueeze(2)  # [N, C, 1, h, w]

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encode_frames(frames).permute(1, 0, 2, 3)  # [C, F, h, w]

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor) -> np.ndarray:
        frames = latents.permute(1, 0, 2, 3)  # [F, C, h, w]
        out = []
        for start in range(0, frames.shape[0], self.decode_chunk):
            z = frames[start : start + self.decode_chunk].to(self.vae.dtype) / self.scale_factor
            out.append(to_uint8_frames(self.vae.decode(z).sample))
        return np.concatenate(out)

    def mask_latents(self, masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.exact_masks is not None:
            return self.exact_masks(masks)
        return super().mask_latents(masks, size)
