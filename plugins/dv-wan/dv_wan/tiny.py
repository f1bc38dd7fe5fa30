"""A tiny Wan 2.1 and a tiny Wan 2.2 TI2V-5B, built from the same classes as the real ones, for
tests and plugin authors.

WanTransformer3DModel (patch (1, 2, 2), 2 heads x 12, 2 blocks, RMS qk-norm across heads,
cross-attention norm), AutoencoderKLWan (16 latent channels, 8x spatial and 4x temporal
compression with the first frame alone, like the real one), UMT5EncoderModel (width 32) and a
T5-family tokenizer made on the fly, with seeded random weights: the same model on every
machine, a few hundred thousand parameters, milliseconds per step on a CPU. A tiny
transformers CLIP vision tower stands in for OpenCLIP ViT-H-14.

The tiny Wan 2.2 (`version="2.2"`) differs where TI2V-5B differs from Wan 2.1: 48 latent
channels in the transformer, and Wan 2.2's VAE (a 2x2 pixel patchify, residual encoder and
decoder, 16x spatial and 4x temporal compression, the real per-channel latent statistics);
the text encoder, tokenizer and image tower are the same.

The tiny Wan 2.2 T2V-A14B (`version="a14b"`) is the tiny Wan 2.1 with a second transformer of
the same config drawn after everything else: `transformer` is the high-noise expert,
`transformer_2` the low-noise one, joined as `dv_wan.family.WanExperts` at T2V-A14B's boundary.

`save_tiny_wan` writes it as a diffusers WanPipeline folder (plus image_encoder/) with the
libraries' own save_pretrained, so the real loading code (`dv_wan.loading.load_folder`) is
tested on it.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dv_wan.loading import WanParts, _cast_text_encoder, _cast_transformer, _freeze, join_experts

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch

__all__ = [
    "TINY_APPEARANCE_DIM",
    "TINY_MAX_LENGTH",
    "TINY_TEXT_DIM",
    "TINY_WAN22_A14B_REVISION",
    "TINY_WAN22_REVISION",
    "TINY_WAN_REVISION",
    "TINY_WORDS",
    "TinyVersion",
    "save_tiny_wan",
    "t5_word_tokenizer",
    "tiny_parts",
    "tiny_text_config",
    "tiny_transformer_config",
    "tiny_vae22_config",
    "tiny_vae_config",
]

# "2.1": tiny Wan 2.1; "2.2": tiny TI2V-5B; "a14b": tiny T2V-A14B (two tiny Wan 2.1 experts).
TinyVersion = Literal["2.1", "2.2", "a14b"]

TINY_WAN_REVISION = "tiny-wan-v1-seed0"
TINY_WAN22_REVISION = "tiny-wan2.2-5b-v1-seed0"
TINY_WAN22_A14B_REVISION = "tiny-wan2.2-a14b-v1-seed0"
TINY_SEED = 0
TINY_TEXT_DIM = 32
TINY_APPEARANCE_DIM = 16  # projection_dim of dreamvideo_cli.testing.tiny_vision_config()
# Prompts in tests are a few words; 32 positions keep the cross-attention small. (The real
# model pads to 512.)
TINY_MAX_LENGTH = 32
# Words that become single pieces, so prompts in tests tokenise as words, not characters.
TINY_WORDS = (
    "a", "an", "the", "of", "on", "in", "at", "is", "and", "with", "photo", "video", "dog",
    "cat", "bear", "toy", "car", "walking", "running", "jumping", "waving", "dancing",
    "beach", "snow", "street", "forest", "park", "red", "blue", "green", "ball", "circle",
    "square", "sks",
)  # fmt: skip
# Every other word falls back to these single characters (each preceded by the word-start
# piece), as sentencepiece does for rare words; nothing becomes <unk>.
_CHARACTERS = string.ascii_letters + string.digits + string.punctuation
# Unigram log-probabilities: a known word (one piece) always beats spelling it out.
_WORD_SCORE, _SPACE_SCORE, _CHAR_SCORE = -3.0, -4.0, -8.0
# Embedding rows are padded to a multiple of this, with at least one spare row: real T5
# tables have more rows than the tokenizer has ids (32,128 vs 32,100), so a placeholder token
# added for textual inversion gets a row of its own.
_EMBEDDING_MULTIPLE = 64


def t5_word_tokenizer(words: Iterable[str] = TINY_WORDS, max_length: int = TINY_MAX_LENGTH) -> Any:
    """A T5 tokenizer (transformers' T5Tokenizer, a `tokenizers` Unigram model) made on the fly:
    "<pad>" 0, "</s>" 1 (appended to every sequence), "<unk>" 2, then word pieces
    ("▁dog") and single characters. No download, no sentencepiece file. The T5 counterpart
    of `dreamvideo_cli.testing.word_tokenizer` (a CLIP BPE one), with the same arguments."""
    from transformers import T5Tokenizer

    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", _SPACE_SCORE)]
    vocab += [(f"▁{w}", _WORD_SCORE) for w in words]
    vocab += [(c, _CHAR_SCORE) for c in _CHARACTERS]
    # No sentinel (<extra_id_N>) tokens: nothing here does span corruption.
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def embedding_rows(tokenizer: Any) -> int:
    """The text encoder's vocab_size for `tokenizer`: more rows than ids."""
    return (len(tokenizer) // _EMBEDDING_MULTIPLE + 1) * _EMBEDDING_MULTIPLE


def tiny_transformer_config(channels: int = 16) -> dict[str, Any]:
    """`channels`: the VAE's latent channels (16 for Wan 2.1, 48 for Wan 2.2 TI2V-5B)."""
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        # 12 so RoPE's split of each head over (frames, height, width) is 4 + 4 + 4.
        "attention_head_dim": 12,
        "in_channels": channels,
        "out_channels": channels,
        "text_dim": TINY_TEXT_DIM,
        "freq_dim": 16,
        "ffn_dim": 48,
        "num_layers": 2,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "rope_max_seq_len": 32,
    }


def tiny_vae_config() -> dict[str, Any]:
    # Three down-sampling stages (8x spatial), the last two also in time (4x), as in Wan's VAE.
    return {
        "base_dim": 8,
        "z_dim": 16,
        "dim_mult": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "temperal_downsample": [False, True, True],
    }


def tiny_vae22_config() -> dict[str, Any]:
    """Wan 2.2's VAE in miniature: the 2x2 patchify (12 input and output channels), three
    residual down-sampling stages (with the patchify, 16x spatial), the last two also in time
    (4x), 48 latent channels with TI2V-5B's own latent statistics."""
    from dv_wan import configs

    return {
        "base_dim": 8,
        "decoder_base_dim": 8,
        "z_dim": 48,
        "dim_mult": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "temperal_downsample": [False, True, True],
        "is_residual": True,
        "in_channels": 12,
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_temporal": 4,
        "scale_factor_spatial": 16,
        "latents_mean": configs.LATENTS_MEAN_22,
        "latents_std": configs.LATENTS_STD_22,
    }


def tiny_text_config(vocab_size: int) -> Any:
    from transformers import UMT5Config

    return UMT5Config(
        vocab_size=vocab_size,
        d_model=TINY_TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def tiny_parts(
    device: str | torch.device = "cpu", dtype: torch.dtype | None = None, version: TinyVersion = "2.1"
) -> WanParts:
    """The tiny model, built on the CPU from a fixed seed (so it is the same everywhere), cast
    the way `load_folder` casts a saved one, frozen and moved to `device`."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionModelWithProjection, UMT5EncoderModel

    from dreamvideo_cli.appearance import CLIPVisionEncoder
    from dreamvideo_cli.testing import tiny_vision_config
    from dv_wan import configs

    dtype = dtype or torch.float32
    tokenizer = t5_word_tokenizer()
    wan22 = version == "2.2"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        experts: list[Any] = [WanTransformer3DModel(**tiny_transformer_config(48 if wan22 else 16))]
        vae: Any = AutoencoderKLWan(**(tiny_vae22_config() if wan22 else tiny_vae_config()))
        text_encoder: Any = UMT5EncoderModel(tiny_text_config(embedding_rows(tokenizer)))
        vision: Any = CLIPVisionModelWithProjection(tiny_vision_config())  # the tiny backbone's
        if version == "a14b":  # the low-noise expert, drawn last so the other parts are tiny Wan 2.1's
            experts.append(WanTransformer3DModel(**tiny_transformer_config(16)))
    for expert in experts:
        _cast_transformer(expert, dtype)
    transformer = join_experts(experts)
    _cast_text_encoder(text_encoder, dtype)
    appearance = CLIPVisionEncoder(vision.to(dtype))
    scheduler = configs.SCHEDULER_CONFIG_22 if wan22 else configs.SCHEDULER_CONFIG
    parts = WanParts(transformer, vae, text_encoder, tokenizer, dict(scheduler), appearance)
    return _freeze(parts, torch.device(device))


def save_tiny_wan(folder: Path, version: TinyVersion = "2.1") -> Path:
    """Write the tiny model (float32) as a diffusers WanPipeline folder: model_index.json,
    transformer/, vae/, text_encoder/, tokenizer/, scheduler/, plus image_encoder/ (a
    transformers CLIP vision tower), each written by its library's save_pretrained. The tiny
    Wan 2.2's pipeline records `expand_timesteps`, as TI2V-5B's does; the tiny A14B's has
    transformer_2/ and its boundary_ratio, as T2V-A14B's."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    from dv_wan import configs

    parts = tiny_parts(version=version)
    scheduler = UniPCMultistepScheduler.from_config(parts.scheduler_config)
    experts: dict[str, Any] = {"transformer": parts.transformer}
    if version == "a14b":  # WanExperts: the pipeline's transformer and transformer_2
        experts = {
            "transformer": parts.transformer.high,
            "transformer_2": parts.transformer.low,
            "boundary_ratio": configs.A14B_BOUNDARY_RATIO,
        }
    pipeline: Any = WanPipeline(
        tokenizer=parts.tokenizer,
        text_encoder=parts.text_encoder,
        vae=parts.vae,
        scheduler=scheduler,
        expand_timesteps=version == "2.2",
        **experts,
    )
    folder.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(folder)
    parts.appearance.model.save_pretrained(folder / "image_encoder")
    return folder
