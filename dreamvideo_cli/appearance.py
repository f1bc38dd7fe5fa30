"""Appearance encoders: CLIP image towers behind one small interface.

Every backbone gives the engine an `nn.Module` mapping images [B, 3, H, W] with values
in [0, 1] to embeddings [B, C']. CLIP's own preprocessing (short side resized to the
tower's input size, centre crop, mean/std normalisation) happens inside, on the device.

Two kinds of tower are supported:
- a transformers `CLIPVisionModelWithProjection` (`CLIPVisionEncoder`; tests use a tiny one);
- OpenCLIP's image tower (`OpenCLIPImageEncoder`), as the DreamVideo authors use it. Their
  motion adapter is conditioned on `model.encode_image(x)` of OpenCLIP ViT-H-14
  (laion2b_s32b_b79k): the pooled class token after the final LayerNorm, multiplied by the
  projection, 1024-d, *not* L2-normalised (VGen's FrozenOpenCLIPVisualEmbedder calls
  encode_image with its default normalize=False). The `visual` module of an OpenCLIP model
  returns exactly this embedding, and the text tower is never kept.

open_clip and transformers are imported inside the functions that need them: open_clip
costs seconds to import (it pulls in timm).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The OpenCLIP repository layout is defined beside the other layouts in the torch-free hub
# module (plugins import it at registration) and re-exported here with the loaders.
from dreamvideo_cli.hub import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, OpenCLIPLayout

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "OPEN_CLIP_CONFIG",
    "OPEN_CLIP_WEIGHTS",
    "THROWAWAY_TEXT_CFG",
    "CLIPVisionEncoder",
    "OpenCLIPImageEncoder",
    "OpenCLIPLayout",
    "clip_preprocess",
    "load_appearance_encoder",
    "load_open_clip_encoder",
    "load_transformers_encoder",
    "random_open_clip_encoder",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Building an OpenCLIP model always builds a text tower too; this one-layer stand-in keeps
# that from costing 350M randomly initialised parameters we would throw away.
THROWAWAY_TEXT_CFG: dict[str, Any] = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}


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


class OpenCLIPImageEncoder(nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> OpenCLIP image embeddings [B, embed_dim]."""

    def __init__(
        self,
        visual: nn.Module,
        image_size: int,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.image_size = image_size
        self.mean = mean
        self.std = std

    @property
    def dtype(self) -> torch.dtype:
        return next(self.visual.parameters()).dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = clip_preprocess(images, self.image_size, self.mean, self.std).to(self.dtype)
        embeds: torch.Tensor = self.visual(pixels)
        return embeds  # [B, embed_dim]


def _image_size(vision_cfg: dict[str, Any]) -> int:
    size = vision_cfg.get("image_size", 224)
    return int(size if isinstance(size, int) else size[0])


def _preprocess(config: dict[str, Any]) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    cfg = config.get("preprocess_cfg", {})
    mean = tuple(float(v) for v in cfg.get("mean", CLIP_MEAN))
    std = tuple(float(v) for v in cfg.get("std", CLIP_STD))
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"expected 3-channel mean/std in {OPEN_CLIP_CONFIG}, got {mean} / {std}")
    return (mean[0], mean[1], mean[2]), (std[0], std[1], std[2])


def _visual_tower(model_cfg: dict[str, Any]) -> nn.Module:
    """The image tower of an OpenCLIP CLIP built from its config (on the current default
    device), with a throw-away text tower."""
    import open_clip

    cfg = {k: v for k, v in model_cfg.items() if k != "custom_text"}
    cfg["text_cfg"] = dict(THROWAWAY_TEXT_CFG)
    model = open_clip.CLIP(**cfg)
    visual: nn.Module = model.visual
    return visual


def random_open_clip_encoder(
    model_cfg: dict[str, Any], device: torch.device, dtype: torch.dtype
) -> OpenCLIPImageEncoder:
    """The architecture of `model_cfg` (e.g. `open_clip.get_model_config("ViT-H-14")`) with
    OpenCLIP's own random initialisation."""
    with torch.device(device):
        visual = _visual_tower(model_cfg)
    return OpenCLIPImageEncoder(visual.to(dtype), _image_size(model_cfg["vision_cfg"]))


def load_open_clip_encoder(folder: Path, device: torch.device, dtype: torch.dtype) -> OpenCLIPImageEncoder:
    """Load the image tower from an OpenCLIP hub-style folder (open_clip_config.json and
    open_clip_model.safetensors or open_clip_pytorch_model.bin), reading only its weights."""
    config = json.loads((folder / OPEN_CLIP_CONFIG).read_text())
    model_cfg = config.get("model_cfg", config)
    weights = next((folder / w for w in OPEN_CLIP_WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no {' or '.join(OPEN_CLIP_WEIGHTS)} in {folder}")
    # Built on the meta device: the real tensors come straight from the checkpoint.
    with torch.device("meta"):
        visual = _visual_tower(model_cfg)
    state = _visual_state_dict(weights)
    visual.load_state_dict(state, strict=True, assign=True)
    mean, std = _preprocess(config)
    encoder = OpenCLIPImageEncoder(visual, _image_size(model_cfg["vision_cfg"]), mean, std)
    return encoder.to(device=device, dtype=dtype)


def _visual_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    prefix = "visual."
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return {k.removeprefix(prefix): f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # noqa: SIM118
    # weights_only: a pickle is never executed, only its tensors read.
    full = torch.load(weights, map_location="cpu", weights_only=True)
    full = full.get("state_dict", full)
    return {k.removeprefix(prefix): v for k, v in full.items() if k.startswith(prefix)}


def load_transformers_encoder(folder: Path, device: torch.device, dtype: torch.dtype) -> CLIPVisionEncoder:
    """A transformers CLIPVisionModelWithProjection folder (its image_embeds are the same
    pooled, projected embedding)."""
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(folder, dtype=dtype)
    return CLIPVisionEncoder(model).to(device)


def load_appearance_encoder(folder: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Either kind of folder: OpenCLIP's (open_clip_config.json) or transformers' (config.json)."""
    if (folder / OPEN_CLIP_CONFIG).is_file():
        return load_open_clip_encoder(folder, device, dtype)
    return load_transformers_encoder(folder, device, dtype)
