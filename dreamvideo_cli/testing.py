"""Test doubles shipped with dv, for our tests and for plugin authors.

`TinyBackbone` is a complete backbone built from the same diffusers and transformers
classes as ModelScopeT2V (UNet3DConditionModel, AutoencoderKL, CLIPTextModel, a CLIP
vision tower), with random weights seeded so that it is the same model on every machine.
A training step takes milliseconds on a CPU, so every part of the engine runs for real
in tests without downloads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamvideo_cli.backbone import Backbone, Components, DenoiserFamily, Fingerprint, VideoFormat
from dreamvideo_cli.objectives import NoiseSchedule

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

TINY_SEED = 0
TINY_REVISION = "tiny-v1-seed0"
# Words merged into single tokens, so prompts in tests read as words, not characters.
TINY_WORDS = (
    "a", "an", "the", "of", "on", "in", "at", "is", "and", "photo", "video", "dog", "cat",
    "bear", "toy", "car", "walking", "running", "jumping", "waving", "dancing", "beach",
    "snow", "street", "forest", "park", "red", "blue", "green", "ball", "circle", "square",
)  # fmt: skip


def word_tokenizer(words: Iterable[str], max_length: int) -> CLIPTokenizer:
    """A CLIP BPE tokenizer made on the fly: the 256 byte symbols, each also with the
    end-of-word mark, plus merges that make each of `words` one token, then the two
    special tokens. For test doubles and toy models whose prompts should read as words.

    A word can still come out in pieces when another word's merge outranks its own
    ("dancing" after "an"); merges for the pieces it does come out as are then added
    until every word is one token. Merges added later rank lower, so they never change how
    an earlier word is split, and the same words always give the same vocabulary and ids.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    words = tuple(words)
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []

    def merge_into_one_token(pieces: list[str]) -> None:
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in merges:
                merges.append((current, piece))
            current += piece
            vocab.setdefault(current, len(vocab))

    for word in words:
        merge_into_one_token([*word[:-1], word[-1] + "</w>"])

    def make() -> CLIPTokenizer:
        # The special tokens come last, so their ids follow every word piece.
        specials = {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
        pairs: Any = list(merges)
        return CLIPTokenizer(vocab={**vocab, **specials}, merges=pairs, model_max_length=max_length)

    for _ in range(10):
        tok = make()
        split = [w for w in words if len(tok.tokenize(w)) != 1]
        if not split:
            return tok
        for word in split:
            merge_into_one_token(tok.tokenize(word))
    raise RuntimeError(f"could not make every word one token: {split}")


def tiny_tokenizer(max_length: int = 16) -> CLIPTokenizer:
    """The tiny backbone's tokenizer: TINY_WORDS are one token each."""
    return word_tokenizer(TINY_WORDS, max_length)


def tiny_unet_config() -> dict[str, Any]:
    return {
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock3D", "DownBlock3D"),
        "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D"),
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
    }


def tiny_vae_config() -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
        "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
        "block_out_channels": (16, 32),
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 32,
    }


def tiny_text_config(vocab_size: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def tiny_vision_config() -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )


class TinyBackbone(Backbone):
    """A few-hundred-thousand-parameter text-to-video model with random weights."""

    name = "tiny"
    description = "random-weight ModelScope-shaped model for tests (no download)"
    is_test = True
    video_format = VideoFormat(height=32, width=32, frames=8, fps=8)
    appearance_dim = 16
    schedule = NoiseSchedule()

    @classmethod
    def family(cls) -> DenoiserFamily:
        from dreamvideo_cli.families.unet3d import UNET3D  # imports torch: not at registration

        return UNET3D

    def build_denoiser(self, device: str = "meta") -> Any:
        import torch
        from diffusers import UNet3DConditionModel

        with torch.device(device), torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            return UNet3DConditionModel(**tiny_unet_config())

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(backbone=self.name, model_id="dreamvideo_cli.testing", revision=TINY_REVISION)

    def load(self, device: Any, dtype: Any = None) -> Components:
        import torch
        from diffusers import AutoencoderKL, UNet3DConditionModel
        from transformers import CLIPTextModel, CLIPVisionModelWithProjection

        from dreamvideo_cli.appearance import CLIPVisionEncoder
        from dreamvideo_cli.codecs import FrameVAECodec
        from dreamvideo_cli.text import CLIPTextEncoding

        dtype = dtype or torch.float32
        if self.path is not None:
            root = Path(self.path)
            unet = UNet3DConditionModel.from_pretrained(root / "unet")
            vae = AutoencoderKL.from_pretrained(root / "vae")
            text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
            vision = CLIPVisionModelWithProjection.from_pretrained(root / "image_encoder")
        else:
            tokenizer = tiny_tokenizer()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(TINY_SEED)
                unet = UNet3DConditionModel(**tiny_unet_config())
                vae = AutoencoderKL(**tiny_vae_config())
                text_encoder = CLIPTextModel(tiny_text_config(len(tokenizer)))
                vision = CLIPVisionModelWithProjection(tiny_vision_config())
        modules = [unet, vae, text_encoder, vision]
        for m in modules:
            m.requires_grad_(False).eval().to(device=device, dtype=dtype)
        return Components(
            denoiser=unet,
            family=self.family(),
            objective=self.training_objective(),
            codec=FrameVAECodec(vae, scale_factor=0.18215),
            text=CLIPTextEncoding(tokenizer, text_encoder),
            appearance_encoder=CLIPVisionEncoder(vision),
            appearance_dim=self.appearance_dim,
            device=torch.device(device),
            dtype=dtype,
        )


def save_tiny_backbone(folder: Path) -> Path:
    """Write the tiny backbone as a diffusers-style folder (unet/, vae/, text_encoder/,
    tokenizer/, image_encoder/), for tests of loading code."""
    parts = TinyBackbone().load("cpu")
    folder.mkdir(parents=True, exist_ok=True)
    unet: Any = parts.denoiser
    unet.save_pretrained(folder / "unet")
    parts.vae.save_pretrained(folder / "vae")
    parts.text_encoder.save_pretrained(folder / "text_encoder")
    parts.tokenizer.save_pretrained(folder / "tokenizer")
    encoder: Any = parts.appearance_encoder
    encoder.model.save_pretrained(folder / "image_encoder")
    return folder
