"""The architectures of Wan 2.1 T2V's and Wan 2.2 TI2V-5B's parts, embedded so nothing has to be
downloaded to build them: `dv backbones info` works on a fresh clone, and `--random-weights`
builds the full-size model on a machine that has never seen the hub.

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

Wan 2.2 TI2V-5B (`Wan-AI/Wan2.2-TI2V-5B-Diffusers`), used here as text-to-video:
- transformer: diffusers' conversion script (scripts/convert_wan_to_diffusers.py, model type
  "Wan2.2-TI2V-5B", at diffusers 58eb52c0) writes dim 3072 as 24 heads x 128, ffn 14336,
  30 layers, 48 input and output channels, the rest as Wan 2.1 (patch (1, 2, 2), text 4096,
  freq 256, RMS qk-norm across heads, cross-attention norm); `rope_max_seq_len` is not set
  there, so the class default 1024 is saved. Wan's own `wan_ti2v_5B.py` has the same values.
- vae: that script's `vae22_diffusers_config`: z_dim 48, base_dim 160, decoder_base_dim 256,
  is_residual, 12 input and output channels (pixels patchified 2x2 first, patch_size 2),
  scale factors 16 (space) and 4 (time), 48-value latents_mean / latents_std; the other keys are
  AutoencoderKLWan's defaults (dim_mult [1, 2, 4, 4], 2 res blocks, no attention, time
  downsampled in the last two stages). The script's `clip_output: False` is left out: diffusers
  removed that argument a day after the release (#12041) and ignores it when loading.
- text encoder and tokenizer: the same umT5-XXL as Wan 2.1 (the script saves google/umt5-xxl).
- scheduler: the script writes UniPCMultistepScheduler(flow_prediction, use_flow_sigmas,
  num_train_timesteps 1000, flow_shift 5.0) for TI2V, which is Wan 2.1's config with shift 5.0;
  Wan's `wan_ti2v_5B.py` samples with shift 5.0, 50 steps, guidance 5.0, 121 frames at 24 fps.
- the pipeline: WanPipeline(expand_timesteps=True), no transformer_2, boundary_ratio None.

Wan 2.2 T2V-A14B (`Wan-AI/Wan2.2-T2V-A14B-Diffusers`), two experts:
- transformer/ (high noise) and transformer_2/ (low noise): each Wan 2.1-14B's config (the
  conversion script's "Wan2.2-T2V-A14B" type: dim 5120, ffn 13824, 40 heads, 40 layers, 16
  channels; Wan's `wan_t2v_A14B.py` the same), so "A14B" below reuses "14B"'s values.
- vae, text encoder, tokenizer: Wan 2.1's (Wan2.1_VAE.pth in Wan's config; 16 channels).
- model_index.json: boundary_ratio 0.875 (the script's T2V value; 0.9 for I2V), applied by
  WanPipeline to the scheduler's shifted timestep (`dv_wan.family.WAN22_A14B`).
- scheduler: the script writes Wan 2.1's UniPC config with flow_shift 3.0 for the A14B types,
  and that converted config is what the Diffusers repository ships and WanPipeline samples
  with; Wan's own `wan_t2v_A14B.py` samples with shift 12.0 (not used here: dv follows the
  Diffusers repository, whose shift a folder's own scheduler/ may change). Guidance: Wan's
  `sample_guide_scale` (3.0 low noise, 4.0 high noise) as WanPipeline's guidance_scale 4.0 and
  guidance_scale_2 3.0, 40 steps (Wan's `sample_steps`).
"""

from __future__ import annotations

from typing import Any, Literal

# "5B" is Wan 2.2 TI2V-5B, "A14B" Wan 2.2 T2V-A14B (two 14B experts), the others Wan 2.1 T2V.
WanSize = Literal["1.3B", "14B", "5B", "A14B"]

HUB_IDS: dict[WanSize, str] = {
    "1.3B": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    "14B": "Wan-AI/Wan2.1-T2V-14B-Diffusers",
    "5B": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    "A14B": "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
}
# How errors and hints name each model's weights.
VERSIONS: dict[WanSize, str] = {"1.3B": "Wan 2.1", "14B": "Wan 2.1", "5B": "Wan 2.2", "A14B": "Wan 2.2"}

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
    "5B": {
        **_TRANSFORMER_COMMON,
        "in_channels": 48,
        "out_channels": 48,
        "num_attention_heads": 24,
        "ffn_dim": 14336,
        "num_layers": 30,
    },
}
TRANSFORMER_CONFIGS["A14B"] = TRANSFORMER_CONFIGS["14B"]  # each of the two experts
# WanTransformer3DModel(**config) on the meta device, counted with nn.Module.parameters().
TRANSFORMER_PARAMETERS: dict[WanSize, int] = {
    "1.3B": 1_418_996_800,
    "14B": 14_288_491_584,
    "5B": 4_999_787_712,
    "A14B": 14_288_491_584,  # each expert
}
# The pipeline folders that hold a transformer: T2V-A14B's second one is its low-noise expert.
EXPERT_FOLDERS: dict[WanSize, tuple[str, ...]] = {
    "1.3B": ("transformer",),
    "14B": ("transformer",),
    "5B": ("transformer",),
    "A14B": ("transformer", "transformer_2"),
}
A14B_BOUNDARY_RATIO = 0.875

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

# Wan 2.2's VAE (TI2V-5B's vae/config.json): 48 latent channels, 16x spatial (a 2x2 pixel
# patchify, then 8x) and 4x temporal with the first frame alone, a residual encoder and decoder.
LATENTS_MEAN_22: list[float] = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
LATENTS_STD_22: list[float] = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip
VAE22_CONFIG: dict[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 16,
    "latents_mean": LATENTS_MEAN_22,
    "latents_std": LATENTS_STD_22,
}
VAE22_PARAMETERS = 704_688_668
VAE_CONFIGS: dict[WanSize, dict[str, Any]] = {
    "1.3B": VAE_CONFIG,
    "14B": VAE_CONFIG,
    "5B": VAE22_CONFIG,
    "A14B": VAE_CONFIG,
}

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
# TI2V-5B's: the same scheduler shifted by 5.0 (its 720p samples; diffusers' conversion script).
SCHEDULER_CONFIG_22: dict[str, Any] = {**SCHEDULER_CONFIG, "flow_shift": 5.0}
SCHEDULER_CONFIGS: dict[WanSize, dict[str, Any]] = {
    "1.3B": SCHEDULER_CONFIG,
    "14B": SCHEDULER_CONFIG,
    "5B": SCHEDULER_CONFIG_22,
    "A14B": SCHEDULER_CONFIG,  # as converted: shift 3.0 (see the module's docstring)
}

# The appearance encoder: OpenCLIP ViT-H-14 trained on LAION-2B, the checkpoint the DreamVideo
# authors condition their motion adapter on (as in dv-modelscope). Wan's own pipelines have
# no image encoder for text-to-video; only its image tower is ever built.
OPEN_CLIP_ARCH = "ViT-H-14"
OPEN_CLIP_PRETRAINED = "laion2b_s32b_b79k"
OPEN_CLIP_HUB_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
APPEARANCE_DIM = 1024
