"""Appearance encoders: CLIP image towers behind one small interface.

Every backbone gives the engine an `nn.Module` mapping images [B, 3, H, W] with values
in [0, 1] to embeddings [B, C']. CLIP's own preprocessing (short side resized to the
tower's input size, centre crop, mean/std normalisation) happens inside, on the device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(
    images: torch.Tensor,
    size: int,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B, 3, size, size], resized, centre-cropped, normalised."""
    _, _, h, w = images.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(images.float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top : top + size, left : left + size].clamp(0, 1)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


class CLIPVisionEncoder(nn.Module):
    """A transformers `CLIPVisionModelWithProjection`: images -> projected image embeddings."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.image_size = int(model.config.image_size)
        self.dim = int(model.config.projection_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = clip_preprocess(images, self.image_size).to(self.model.dtype)
        embeds: torch.Tensor = self.model(pixel_values=pixels).image_embeds
        return embeds  # [B, C']
