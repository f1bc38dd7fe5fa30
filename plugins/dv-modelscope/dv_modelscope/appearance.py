"""The appearance encoder: OpenCLIP ViT-H-14's image tower, as the DreamVideo authors use it.

Their motion adapter is conditioned on `model.encode_image(x)` of OpenCLIP ViT-H-14
(laion2b_s32b_b79k): the pooled class token after the final LayerNorm, multiplied by the
projection, 1024-d, *not* L2-normalised (VGen's FrozenOpenCLIPVisualEmbedder calls
encode_image with its default normalize=False). We keep exactly that: the `visual` module of
an OpenCLIP model returns this embedding, and the text tower is never built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dreamvideo_cli.appearance import CLIP_MEAN, CLIP_STD, clip_preprocess
from dv_modelscope.configs import THROWAWAY_TEXT_CFG
from dv_modelscope.hub import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS


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


def random_open_clip_encoder(model_cfg: dict[str, Any], device: torch.device, dtype: torch.dtype) -> OpenCLIPImageEncoder:
    """The architecture of `model_cfg` with OpenCLIP's own random initialisation."""
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
    full = torch.load(weights, map_location="cpu", weights_only=True)
    full = full.get("state_dict", full)
    return {k.removeprefix(prefix): v for k, v in full.items() if k.startswith(prefix)}


def load_transformers_encoder(folder: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A transformers CLIPVisionModelWithProjection folder (its image_embeds are the same
    pooled, projected embedding)."""
    from transformers import CLIPVisionModelWithProjection

    from dreamvideo_cli.appearance import CLIPVisionEncoder

    model = CLIPVisionModelWithProjection.from_pretrained(folder, dtype=dtype)
    return CLIPVisionEncoder(model).to(device)
