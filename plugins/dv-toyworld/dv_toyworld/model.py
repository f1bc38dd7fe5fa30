"""The toy world's text-to-video model, built from the same classes as the real backbones.

- UNet: diffusers `UNet3DConditionModel` (spatial + temporal transformers, like
  ModelScopeT2V), on 8x8 "latents" of 48 channels, inside `ToyUNet`, a preconditioning
  wrapper (see there) that keeps the engine's interface: (x_t, t, text) -> v.
- "VAE": a lossless space-to-depth module (4x4 pixel blocks -> channels). It exposes
  AutoencoderKL's `encode(x).latent_dist.mean` / `decode(z).sample`, so the engine runs
  unchanged, and costs nothing to train. A 32x32 frame is an [48, 8, 8] latent.
- Text: transformers `CLIPTextModel` with a CLIP BPE tokenizer whose merges make every
  world word a single token.
- Appearance encoder: a fixed, parameter-free feature extractor that segments the
  object from the image border's colour and describes its colour, size and shape
  wherever it is, which is what appearance guidance needs.

All weights live in one safetensors file; its metadata holds the configs and the command
that produced it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dreamvideo_cli import DDPMObjective
from dreamvideo_cli.testing import word_tokenizer
from dv_toyworld import world
from dv_toyworld.schedule import APPEARANCE_DIM, TOY_SCHEDULE

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "toyworld.safetensors"
CONFIG_FILE = WEIGHTS_DIR / "toyworld.json"
LATENT_FACTOR = 4  # pixels per latent cell per side
MAX_TOKENS = 16


# -------------------------------------------------------------------- tokenizer


def toy_tokenizer() -> Any:
    """A CLIP BPE tokenizer over bytes plus merges that make each world word one token.

    One difference from `word_tokenizer`: <|startoftext|> has <|endoftext|>'s id (the last).
    The copy of the builder this module used to have gave it that id, and the committed
    weights were trained with it, so prompts must keep reading that way."""
    from transformers import CLIPTokenizer

    built = word_tokenizer(world.VOCABULARY, MAX_TOKENS)
    vocab = built.get_vocab()
    vocab["<|startoftext|>"] = vocab["<|endoftext|>"]
    merges: Any = [tuple(pair) for pair in json.loads(built.backend_tokenizer.to_str())["model"]["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


# -------------------------------------------------------------------- configs


def unet_config() -> dict[str, Any]:
    return {
        "sample_size": world.SIZE // LATENT_FACTOR,
        "in_channels": 3 * LATENT_FACTOR**2,
        "out_channels": 3 * LATENT_FACTOR**2,
        "down_block_types": ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
        "up_block_types": ("CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        "block_out_channels": (64, 64),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "cross_attention_dim": 64,
        "attention_head_dim": 4,  # diffusers reads this as the number of heads
    }


def text_config(vocab_size: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


# -------------------------------------------------------------------- small modules


class _Latents:
    def __init__(self, mean: torch.Tensor) -> None:
        self.mean = mean


class _Encoded:
    def __init__(self, latents: torch.Tensor) -> None:
        self.latent_dist = _Latents(latents)


class _Decoded:
    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample


class SpaceToDepthVAE(nn.Module):
    """A lossless stand-in for AutoencoderKL: [N, 3, H, W] <-> [N, 3*f*f, H/f, W/f]."""

    def __init__(self, factor: int = LATENT_FACTOR) -> None:
        super().__init__()
        self.factor = factor
        # Carries dtype and device through `.to()`, which the engine reads as `vae.dtype`.
        self.register_buffer("_probe", torch.zeros(()), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.get_buffer("_probe").dtype

    def encode(self, x: torch.Tensor) -> _Encoded:
        return _Encoded(F.pixel_unshuffle(x, self.factor))

    def decode(self, z: torch.Tensor) -> _Decoded:
        return _Decoded(F.pixel_shuffle(z, self.factor))

    def encode_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """Pixel masks [N, 1, H, W] -> [N, 3*f*f, H/f, W/f], channel for channel with
        `encode`: every latent channel is one pixel's colour, so the mask is exact."""
        return F.pixel_unshuffle(masks.expand(-1, 3, -1, -1), self.factor)


class ToyAppearanceEncoder(nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> [B, 64]: what the object looks like, wherever it is.

    A fixed, parameter-free module (the toy world's stand-in for a CLIP image tower): the
    background is the median colour of the image border, the object is every pixel far
    from it (a soft mask), and the embedding encodes the object's mean colour, colour
    spread (stripes), size and shape moments, plus the background colour, each as raw
    values and as sines and cosines at two frequencies so a linear layer can read them."""

    def __init__(self) -> None:
        super().__init__()
        self.dim = APPEARANCE_DIM
        # Carries dtype and device through `.to()`.
        self.register_buffer("_probe", torch.zeros(()), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-2:] != (world.SIZE, world.SIZE):
            x = F.interpolate(x, size=(world.SIZE, world.SIZE), mode="bilinear", antialias=True, align_corners=False)
        b = x.shape[0]
        border = torch.cat(
            [x[:, :, :2].flatten(2), x[:, :, -2:].flatten(2), x[:, :, :, :2].flatten(2), x[:, :, :, -2:].flatten(2)], 2
        )
        background = border.median(dim=2).values  # [B, 3]
        distance = (x - background.view(b, 3, 1, 1)).norm(dim=1)  # [B, H, W]
        mask = torch.sigmoid((distance - 0.15) / 0.03)  # soft object mask
        weight = mask / mask.sum((1, 2), keepdim=True).clamp(min=1e-3)
        colour = (x * weight.unsqueeze(1)).sum((2, 3))  # [B, 3]
        spread = ((x - colour.view(b, 3, 1, 1)) ** 2 * weight.unsqueeze(1)).sum((2, 3)).sqrt()  # [B, 3]
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, world.SIZE, device=x.device),
            torch.linspace(-1, 1, world.SIZE, device=x.device),
            indexing="ij",
        )
        my, mx = (weight * ys).sum((1, 2)), (weight * xs).sum((1, 2))
        dy, dx = ys - my.view(b, 1, 1), xs - mx.view(b, 1, 1)
        moments = (
            torch.stack(
                [(weight * dx * dx).sum((1, 2)), (weight * dy * dy).sum((1, 2)), (weight * dx * dy).sum((1, 2))], 1
            )
            * 10
        )
        area = mask.mean((1, 2)).unsqueeze(1) * 10
        base = torch.cat([colour, spread, background, area, moments, mask.amax((1, 2)).unsqueeze(1)], 1)  # [B, 14]
        angles = torch.cat([base * torch.pi, base * 2 * torch.pi], 1)  # [B, 28]
        features = torch.cat([base, angles.sin(), angles.cos()], 1)[:, : self.dim]  # [B, 70] -> [B, 64]
        return features.to(self.get_buffer("_probe").dtype)


class _UNetOutput:
    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample


class ToyUNet(nn.Module):
    """A diffusers UNet3DConditionModel behind EDM-style preconditioning.

    The engine sees a v-prediction model. Inside, the UNet predicts the clean latents x0
    mixed with a skip from the input:

        x0_hat = c_skip * x_t / sqrt(a) + (1 - c_skip) * unet(x_t, t, text),
        c_skip = s^2 / (sigma^2 + s^2),  sigma^2 = (1 - a) / a,  s = 0.1
        v_hat  = (sqrt(a) * x_t - x0_hat) / sqrt(1 - a)

    Why: each 48-channel latent is a 4x4 block of pixels, and a UNet this small learns very
    slowly to pass 48 channels of i.i.d. noise from its input to its output, which is what
    predicting epsilon or v needs; predicting the (smooth, simple) clean frame is easy. The
    skip takes over only at the lowest noise levels, so the weight the engine's v-loss puts
    on the UNet's error, (1 - c_skip)^2 / (1 - a), stays below 1 / (4 s^2) = 25 for every t.
    Adapters attach to the inner UNet (their site paths start with `unet.`).
    """

    SKIP_SCALE = 0.1

    def __init__(self, unet: Any, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.unet = unet
        # Not a buffer: `.to(bfloat16)` must not round the noise levels.
        self._alphas = alphas_cumprod.detach().to(torch.float64)

    @property
    def config(self) -> Any:
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def set_attn_processor(self, processor: Any) -> None:
        self.unet.set_attn_processor(processor)  # type: ignore[operator]

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, encoder_hidden_states: torch.Tensor, **kwargs: Any
    ) -> _UNetOutput:
        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device).long().reshape(-1).expand(b)  # [B]
        a = self._alphas.to(sample.device)[t].float().view(b, 1, 1, 1, 1)
        sigma2 = (1 - a) / a
        c_skip = self.SKIP_SCALE**2 / (sigma2 + self.SKIP_SCALE**2)
        x0 = self.unet(sample, t, encoder_hidden_states=encoder_hidden_states, **kwargs).sample.float()
        x0_hat = c_skip * sample.float() / a.sqrt() + (1 - c_skip) * x0
        v = (a.sqrt() * sample.float() - x0_hat) / (1 - a).sqrt()
        return _UNetOutput(v.to(sample.dtype))


def alphas_cumprod() -> torch.Tensor:
    """alpha-bar_t of TOY_SCHEDULE (DDPM's linear betas 1e-4 .. 0.02) as the toy backbone was
    pretrained with them: computed in float64, used rounded to float32.

    Why not the engine's `DDPMObjective` levels: diffusers' DDPMScheduler computes the same
    schedule in float32, and 867 of its 1000 levels differ from these in the last bits
    (under 4e-7 relative). `ToyUNet`'s preconditioning runs at these levels, and the
    committed weights were trained at them; the engine's levels in either place would
    change every loss and video that tests/test_compat.py replays, and make pretraining's
    recorded commands no longer reproduce the committed weights."""
    s = TOY_SCHEDULE
    betas = torch.linspace(s.beta_start, s.beta_end, s.num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def pretraining_objective() -> DDPMObjective:
    """The engine's DDPM objective for TOY_SCHEDULE at the levels pretraining uses
    (`alphas_cumprod`): noising, v target and x0 are DDPMObjective's own; only its
    scheduler's alpha-bar table is replaced. Learning in dv (`ToyWorldBackbone`'s
    `training_objective()`) keeps the objective's own float32 levels, as the recorded
    compat losses were computed with them."""
    objective = DDPMObjective(TOY_SCHEDULE)
    objective.scheduler.alphas_cumprod = alphas_cumprod().float()
    return objective


class FramePositions(nn.Module):
    """A temporal transformer's `proj_in` followed by sinusoidal frame positions.

    diffusers' UNet3DConditionModel builds its temporal transformers without positional
    embeddings (ModelScope's original has relative position biases): temporal attention
    then cannot tell frame 2 from frame 5, and motion adapters, which act on each frame's
    hidden state, would have to infer frame order from the boundary effects of the
    temporal convolutions. Adding positions here, where the blocks' input is formed, gives
    every temporal block and its adapters the frame index (as AnimateDiff's motion modules
    do with `positional_embeddings="sinusoidal"`), and keeps the adapters' wiring exact:
    they read the same hidden state whether attached or not."""

    def __init__(self, proj_in: Any, max_frames: int = 64) -> None:
        super().__init__()
        self.proj_in = proj_in
        dim = int(proj_in.out_features)
        position = torch.arange(max_frames, dtype=torch.float32).unsqueeze(1)
        rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_frames, dim)
        table[:, 0::2] = torch.sin(position * rate)
        table[:, 1::2] = torch.cos(position * rate)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [batch*height*width, frames, C] -> [batch*height*width, frames, inner]
        y: torch.Tensor = self.proj_in(x)
        table: torch.Tensor = self.get_buffer("table")
        return y + table[: y.shape[1]].to(y.dtype)


def toy_unet() -> ToyUNet:
    from diffusers import UNet3DConditionModel
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    unet: Any = UNet3DConditionModel(**unet_config())
    for module in unet.modules():
        if isinstance(module, TransformerTemporalModel):
            module.proj_in = FramePositions(module.proj_in)
    return ToyUNet(unet, alphas_cumprod())


def attention_for_cpu(unet: nn.Module) -> None:
    """Plain bmm attention: with 16-wide heads it is faster on a CPU than SDPA's kernel."""
    from diffusers.models.attention_processor import AttnProcessor

    unet.set_attn_processor(AttnProcessor())  # type: ignore[operator]


# -------------------------------------------------------------------- building and files


def build(seed: int = 0) -> dict[str, Any]:
    """Fresh, randomly initialised components: unet, text_encoder, tokenizer, appearance."""
    from transformers import CLIPTextModel

    tokenizer = toy_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = toy_unet()
        text_encoder = CLIPTextModel(text_config(len(tokenizer)))
        appearance = ToyAppearanceEncoder()
    appearance.requires_grad_(False)
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "appearance": appearance}


def state_dict(parts: dict[str, Any], dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Every weight, prefixed by component, in `dtype` (fp16 halves the file)."""
    out: dict[str, torch.Tensor] = {}
    for prefix in ("unet", "text_encoder"):
        for key, value in parts[prefix].state_dict().items():
            out[f"{prefix}.{key}"] = value.detach().to("cpu", dtype).contiguous()
    return out


def save(path: Path, parts: dict[str, Any], metadata: dict[str, str]) -> None:
    """Write the weights atomically, with the configs in the metadata."""
    from safetensors.torch import save as to_bytes

    meta = {
        "format": "dv-toyworld/3",
        "unet_config": json.dumps(unet_config()),
        "vocabulary": json.dumps(list(world.VOCABULARY)),
        **metadata,
    }
    from dv_registry.fsutil import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, to_bytes(state_dict(parts), metadata=meta))


def load_into(path: Path, parts: dict[str, Any]) -> dict[str, str]:
    """Fill freshly built components with the weights in `path`; returns the metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        metadata: dict[str, str] = f.metadata() or {}
    if json.loads(metadata.get("vocabulary", "[]")) != list(world.VOCABULARY):
        raise ValueError(f"{path} was trained with another vocabulary")
    tensors = load_file(str(path))
    for prefix in ("unet", "text_encoder"):  # the appearance encoder has no weights
        module = parts[prefix]
        own = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        expected = module.state_dict()
        own = {k: v.to(expected[k].dtype) if k in expected else v for k, v in own.items()}
        module.load_state_dict(own, strict=True)
    return metadata


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
