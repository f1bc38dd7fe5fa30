"""The embedded architecture (what `--random-weights` and `dv backbones info` build) against
the configs the Hub publishes, written down here so the test needs no network.

Source of every constant below: the `config.json` files of the Hub repository
`ali-vilab/text-to-video-ms-1.7b`, branch `main`, as published (read from the Hub's blame
pages of `main`: vae/ and text_encoder/ unchanged since commit 0951da4, unet/ also edited
in 6027d84 and 059ee50):
  https://huggingface.co/ali-vilab/text-to-video-ms-1.7b/blob/main/unet/config.json
  https://huggingface.co/ali-vilab/text-to-video-ms-1.7b/blob/main/vae/config.json
  https://huggingface.co/ali-vilab/text-to-video-ms-1.7b/blob/main/text_encoder/config.json
Only bookkeeping keys are left out (`_class_name`, `_diffusers_version`, `_name_or_path`,
`architectures`, `torch_dtype`, `transformers_version`). Copies saved from caches under the
repository's old id (`models--damo-vilab--text-to-video-ms-1.7b/snapshots/8227ddd...`, re-uploaded
by third parties) show the same values.
"""

from __future__ import annotations

from typing import Any

import pytest

from dv_modelscope import configs
from dv_modelscope.backbones import ModelScopeBackbone

HUB_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 64,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
}

HUB_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

HUB_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "pad_token_id": 1,
    "projection_dim": 512,
    "vocab_size": 49408,
}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _differences(built: dict[str, Any], hub: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (_plain(built.get(k)), v) for k, v in hub.items() if _plain(built.get(k)) != v}


def test_the_unet_is_the_hubs() -> None:
    unet: Any = ModelScopeBackbone().build_denoiser("meta")
    assert _differences(dict(unet.config), HUB_UNET_CONFIG) == {}


def test_the_vae_is_the_hubs() -> None:
    import torch
    from diffusers import AutoencoderKL

    assert ModelScopeBackbone.vae_config is configs.VAE_CONFIG
    with torch.device("meta"):
        vae: Any = AutoencoderKL(**configs.VAE_CONFIG)
    assert _differences(dict(vae.config), HUB_VAE_CONFIG) == {}
    assert vae.config.scaling_factor == configs.VAE_SCALE_FACTOR
    # What sample_size decides: the tile size of tiled decoding, as with the hub's folder.
    assert vae.tile_sample_min_size == 512


def test_the_text_encoder_is_the_hubs() -> None:
    from transformers import CLIPTextConfig

    assert ModelScopeBackbone.text_encoder_config is configs.TEXT_ENCODER_CONFIG
    built = CLIPTextConfig(**configs.TEXT_ENCODER_CONFIG).to_dict()
    # `dropout` is a field of the transformers that wrote the file; the installed one has none
    # (CLIP uses attention_dropout only), so it would be a dead attribute either way.
    fields = set(CLIPTextConfig().to_dict())
    assert set(HUB_TEXT_ENCODER_CONFIG) - fields <= {"dropout"}
    hub = {k: v for k, v in HUB_TEXT_ENCODER_CONFIG.items() if k in fields}
    assert _differences(built, hub) == {}


@pytest.mark.parametrize("name", ["bos_token_id", "eos_token_id", "pad_token_id"])
def test_special_token_ids_are_spelled_out(name: str) -> None:
    """Not left to CLIPTextConfig's defaults, which changed (49406/49407/1 today)."""
    assert configs.TEXT_ENCODER_CONFIG[name] == HUB_TEXT_ENCODER_CONFIG[name]
