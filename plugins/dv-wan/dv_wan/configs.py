"""The architectures of Wan 2.1 T2V's parts, embedded so nothing has to be downloaded to build
them: `dv backbones info` works on a fresh clone, and `--random-weights` builds the full-size
model on a machine that has never seen the hub.

Where the values come from (checked 2026-12; diffusers 0.42.1 and transformers 5.23 installed):
- transformer/config.json of `Wan-AI/Wan2.1-T2V-1.3B-Diffusers`: the keys and values below,
  serialised the way diffusers writes configs (sorted, indent 2, `_diffusers_version`
  0.33.0.dev0), give exactly the 465 bytes the hub lists for that file; the same values appear in
  copies of it (callgg/t2v-decoder) and in Wan's own `wan_t2v_1_3B.py` (dim 1536, ffn 8960,
  12 heads, 30 layers). The 14B differs only in width, feed-forward and depth (Wan's
  `wan_t2v_14B.py`: dim 5120, ffn 13824, 40 heads, 40 layers; the same values in the 14B
  transformers of Wan2.1-VACE-14B-diffusers and Wan2.2-T2V-A14B-Diffusers), and equals
  WanTransformer3DModel's class defaults in diffusers 0.42.1.
- vae/config.json: identical in both repositories (one VAE for the family); the values of
  `diffusers/Wan2.1-VAE` and of a copy saved from Wan2.1-T2V-1.3B-Diffusers (ai-toolkit/wan2.1-vae),
  which are also AutoencoderKLWan's class defaults.
- text_encoder/config.json: google/umt5-xxl's encoder, as copies saved from both repositories
  hold it (nvidia/AnyFlow-Wan2.1-T2V-1.3B-Diffusers, wavespeed/Wan2.1-T2V-14B-Diffusers-fp16);
  with `_name_or_path` "google/umt5-xxl" (and a torch_dtype and transformers_version we cannot
  see; "float32" and "4.49.0.dev0" fit) those keys serialise to the 854 bytes the hub lists.
- scheduler/scheduler_config.json of the 1.3B repository since its update #4: a
  UniPCMultistepScheduler with flow sigmas and shift 3.0; these keys serialise to the 751 bytes
  the hub lists (the Wan2.1-VACE-14B mirror holds the same content). The 14B repository's
  model_index.json names UniPCMultistepScheduler too (FlowMatchEulerDiscreteScheduler in its
  first commit); its scheduler file itself could not be read here, so the 14B gets the same
  default, which is used only when a folder has no scheduler/ of its own.
"""

from __future__ import annotations

from typing import Any, Literal

WanSize = Literal["1.3B", "14B"]

HUB_IDS: dict[WanSize, str] = {
    "1.3B": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    "14B": "Wan-AI/Wan2.1-T2V-14B-Diffusers",
}

# transformer/config.json (WanTransformer3DModel kwargs), shared keys first.
_TRANSFORMER_COMMON: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,  # text-to-video: no image conditioning branch
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}
TRANSFORMER_CONFIGS: dict[WanSize, dict[str, Any]] = {
    "1.3B": {**_TRANSFORMER_COMMON, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30},
    "14B": {**_TRANSFORMER_COMMON, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40},
}
# WanTransformer3DModel(**config) on the meta device, counted with nn.Module.parameters().
TRANSFORMER_PARAMETERS: dict[WanSize, int] = {"1.3B": 1_418_996_800, "14B": 14_288_491_584}

# vae/config.json (AutoencoderKLWan kwargs): 8x spatial, 4x temporal (first frame alone), 16
# latent channels normalised per channel with these statistics.
LATENTS_MEAN: list[float] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]  # fmt: skip
LATENTS_STD: list[float] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916,
]  # fmt: skip
VAE_CONFIG: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],  # sic: diffusers' spelling
    "dropout": 0.0,
    "latents_mean": LATENTS_MEAN,
    "latents_std": LATENTS_STD,
}
VAE_PARAMETERS = 126_892_531
VAE_SPATIAL_FACTOR = 8
# Frames per latent frame after the first, so videos have k * 4 + 1 frames: the backbones'
# `temporal_compression` and the codec's `temporal_factor` both read this.
VAE_TEMPORAL_FACTOR = 4

# text_encoder/config.json (transformers UMT5Config kwargs): umT5-XXL's encoder, 5.68B
# parameters. The embedding table has 256,384 rows; the tokenizer has fewer ids, so a new
# placeholder token's id falls inside the table.
TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_decoder_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "initializer_factor": 1.0,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "is_encoder_decoder": True,
    "scalable_attention": True,
    "tie_word_embeddings": False,  # as saved; transformers 5 ties T5 embeddings regardless
    "use_cache": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "classifier_dropout": 0.0,
    "tokenizer_class": "T5Tokenizer",
}
TEXT_ENCODER_PARAMETERS = 5_680_910_336
# WanPipeline's max_sequence_length: prompts are padded (with a mask) to 512 tokens.
TOKENIZER_MAX_LENGTH = 512

# scheduler/scheduler_config.json: UniPC over flow-matching sigmas, shifted by 3.0 (diffusers'
# advice for 480p; 5.0 for 720p).
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "UniPCMultistepScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "solver_order": 2,
    "prediction_type": "flow_prediction",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
    "predict_x0": True,
    "solver_type": "bh2",
    "lower_order_final": True,
    "disable_corrector": [],
    "solver_p": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "final_sigmas_type": "zero",
    "rescale_betas_zero_snr": False,
}

# The appearance encoder: OpenCLIP ViT-H-14 trained on LAION-2B, the checkpoint the DreamVideo
# authors condition their motion adapter on (as in dv-modelscope). Wan's own pipelines have
# no image encoder for text-to-video; only its image tower is ever built.
OPEN_CLIP_ARCH = "ViT-H-14"
OPEN_CLIP_PRETRAINED = "laion2b_s32b_b79k"
OPEN_CLIP_HUB_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
APPEARANCE_DIM = 1024
