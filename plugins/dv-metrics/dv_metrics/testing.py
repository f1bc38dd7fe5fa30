"""Tiny random-weight encoders with the real architectures, for tests without downloads.

`tiny_clip_model` is an open_clip `CLIP` (QuickGELU, like OpenAI's) and `tiny_dino_model`
a transformers `ViTModel`, both small enough to build and run in milliseconds. Wrap them
in `OpenCLIPEncoder` / `DINOEncoder` and pass them to the metrics as `encoder=`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_IMAGE_SIZE = 32
TINY_CONTEXT_LENGTH = 16
# open_clip's BPE tokenizer emits ids up to 49407 whatever the model size.
OPEN_CLIP_VOCAB = 49408


def tiny_clip_config() -> dict[str, Any]:
    """An open_clip model config (the `model_cfg` of an `open_clip_config.json`)."""
    return {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {"image_size": TINY_IMAGE_SIZE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {
            "context_length": TINY_CONTEXT_LENGTH,
            "vocab_size": OPEN_CLIP_VOCAB,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }


def tiny_clip_model(seed: int = 0) -> Any:
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**tiny_clip_config()).eval()


def tiny_clip_tokenizer() -> Any:
    import open_clip

    return open_clip.SimpleTokenizer(context_length=TINY_CONTEXT_LENGTH)


def save_open_clip_folder(model: Any, folder: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Write `model` as open_clip's local-dir format: open_clip_config.json + open_clip_model.safetensors."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "model_cfg": config or tiny_clip_config(),
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def tiny_dino_model(seed: int = 0) -> Any:
    import torch
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        image_size=TINY_IMAGE_SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        layer_norm_eps=1e-6,  # DINO's own ViTs (dv_metrics.weights.DINO_LAYER_NORM_EPS)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ViTModel(config, add_pooling_layer=False).eval()
