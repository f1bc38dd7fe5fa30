"""The runtime every engine command shares: devices and dtypes, and a loaded backbone's
frozen work (text, latents, appearance) in the shapes the engine uses.

Public: plugins (the toy world's probe, third-party samplers and metrics) may import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dreamvideo_cli.backbone import Components
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.text import Tokens

__all__ = [
    "autocast",
    "encode_appearance",
    "encode_text",
    "frozen_dtype",
    "indexed",
    "pick_device",
    "quiet_libraries",
    "to_tensor_images",
    "tokenize",
]


def quiet_libraries() -> None:
    """diffusers and transformers log warnings meant for their developers; keep stderr ours."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def pick_device(name: str = "auto") -> torch.device:
    """The device `--device NAME` names; a GPU always with its index (`cuda:0`), since a
    tensor's device has one and `torch.device("cuda") != torch.device("cuda:0")`: code that
    compares a tensor's device with the run's must not be told every tensor is elsewhere."""
    if name == "auto":
        return indexed(torch.device("cuda")) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DVError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DVError("--device cuda was asked for but no CUDA GPU is available", "use --device cpu")
    return indexed(device)


def indexed(device: torch.device) -> torch.device:
    """`cuda` as `cuda:N` of the current GPU, as its tensors say; any other device as it is."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def frozen_dtype(device: torch.device) -> torch.dtype:
    """Frozen weights run in bf16 on a GPU; a CPU keeps fp32 (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def autocast(device: torch.device) -> Any:
    # Trainable adapters keep fp32 master weights; autocast runs their matmuls in bf16.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def to_tensor_images(images: list[np.ndarray] | np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [H, W, 3] images -> float [N, 3, H, W] in [0, 1]."""
    array = np.stack(list(images)).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).to(device)


def tokenize(parts: Components, prompts: list[str]) -> Tokens:
    return parts.text.tokenize(prompts, parts.device)  # ids [B, T] (+ mask)


def encode_text(parts: Components, tokens: Tokens) -> torch.Tensor:
    """Tokens -> text-encoder hidden states [B, T, D] (the denoiser's context)."""
    return parts.text.encode(tokens)


@torch.no_grad()
def encode_appearance(parts: Components, pixels: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Images [N, 3, H, W] in [0, 1] -> appearance embeddings [N, C'], fp32."""
    return torch.cat(
        [
            parts.appearance_encoder(pixels[s : s + chunk].to(parts.device, parts.dtype)).float()
            for s in range(0, len(pixels), chunk)
        ]
    )


def prepare_denoiser(parts: Components) -> None:
    """Engine-wide measures of the denoiser's family that change no result (UNet3D's chunked
    temporal attention): run after every load, before adapters are attached."""
    parts.family.prepare(parts.denoiser, parts.device)


def dropped_words(parts: Components, text: str) -> str | None:
    """The words a prompt loses because the text encoder reads only its first tokens, or None."""
    dropped = parts.text.overflow(text)
    return parts.tokenizer.decode(dropped).strip() if dropped else None


def overflow_warning(parts: Components, backbone: str, what: str, words: str) -> str:
    """The one wording of the warning a cut prompt or caption gets (`what`: "the prompt", "a caption")."""
    return (
        f"{what} is longer than {backbone}'s text encoder reads ({parts.text.max_length} tokens); "
        f"it is cut before: {words!r}"
    )
