"""The architectures of ModelScopeT2V's parts, embedded so nothing has to be downloaded to
build them: `dv backbones info` works on a fresh clone, and `--random-weights` builds the
full-size model on a machine that has never seen the hub.

Values are those of the published diffusers configs of `ali-vilab/text-to-video-ms-1.7b`
(unet/, vae/, text_encoder/), including the ones that change no weight (the VAE's
`sample_size`, which sets diffusers' tile size, and the text encoder's special token ids):
`--random-weights` should build what loading the hub's folders builds.
`tests/test_modelscope_configs.py` compares them with the hub's files. Zeroscope v2 is a
fine-tune of the same architecture.
"""

from __future__ import annotations

from typing import Any

# unet/config.json. These are also diffusers' UNet3DConditionModel defaults; they are
# spelled out so a change of defaults upstream cannot silently change the architecture.
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-05,
    "cross_attention_dim": 1024,
    "attention_head_dim": 64,
}

# vae/config.json: Stable Diffusion 2.1's AutoencoderKL. `sample_size` is 512 there (the
# image VAE's training size); diffusers derives its tile size from it.
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
VAE_SCALE_FACTOR = 0.18215

# text_encoder/config.json: OpenCLIP ViT-H-14's text tower converted to a transformers
# CLIPTextModel. 23 layers, not 24: ModelScope conditions on the penultimate layer, and the
# conversion simply drops the last one. The special token ids are the hub config's 0/2/1
# (CLIPTextConfig's old defaults), not the tokenizer's 49406/49407: with eos_token_id 2
# transformers pools at the highest token id, as the hub model does when loaded.
TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
    "projection_dim": 512,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
TOKENIZER_MAX_LENGTH = 77

# The appearance encoder: OpenCLIP ViT-H-14 trained on LAION-2B (the checkpoint the
# DreamVideo authors use). Only its image tower is ever built.
OPEN_CLIP_ARCH = "ViT-H-14"
OPEN_CLIP_PRETRAINED = "laion2b_s32b_b79k"
OPEN_CLIP_HUB_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
APPEARANCE_DIM = 1024
# Building an OpenCLIP model always builds a text tower too; this one-layer stand-in keeps
# that from costing 350M randomly initialised parameters we would throw away.
THROWAWAY_TEXT_CFG: dict[str, Any] = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
