"""The error `--fp8` adds: the relative error of one denoiser forward with the frozen linears
stored in fp8 (dreamvideo_cli/memory/fp8.py) against the same model unconverted, on the CPU.

    uv run python scripts/fp8_error.py tiny tiny-wan            # seconds
    uv run python scripts/fp8_error.py wan --dtype bfloat16     # Wan 2.1 1.3B, random weights: ~1-2 min, ~8 GB RAM

For each model and compute dtype it prints ||y_fp8 - y|| / ||y|| for the scaled storage with
one scale per block of 64 and 128 input features and per output row, and for a plain cast (no
scale), plus, under bfloat16, the error of the bf16 model itself against float32 (the error
that is already accepted). Random weights are not trained ones (no outlier channels), so per
row and per block differ less here than they would on real weights.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn

from dreamvideo_cli.backbone import DenoiserFamily
from dreamvideo_cli.memory.fp8 import Fp8Linear, fp8_targets

VARIANTS: dict[str, tuple[int | None, bool]] = {
    "block 64": (64, True),
    "block 128": (128, True),
    "per row": (None, True),
    "plain cast": (None, False),
}


def build(name: str) -> tuple[nn.Module, DenoiserFamily, dict[str, Any]]:
    """The denoiser in float32, its family, and a small input for one forward."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "tiny":
        from dreamvideo_cli.testing import TinyBackbone

        backbone: Any = TinyBackbone()
        inputs: dict[str, Any] = {
            "sample": torch.randn(1, 4, 8, 16, 16, generator=g),  # latents [B, C, F, h, w]
            "timestep": torch.tensor([500]),
            "encoder_hidden_states": torch.randn(1, 16, 32, generator=g),  # [B, T, D]
        }
    else:
        from dv_wan.backbones import TinyWanBackbone, WanBackbone

        if name == "tiny-wan":
            backbone = TinyWanBackbone()
            latents, context = (1, 16, 3, 8, 8), (1, 32, 32)
        else:  # the full-size 1.3B transformer, random weights; 4x4 latent tokens x 1 frame
            backbone = WanBackbone(random_weights=True)
            latents, context = (1, 16, 1, 8, 8), (1, 16, 4096)
        inputs = {
            "hidden_states": torch.randn(*latents, generator=g),
            "timestep": torch.tensor([500]),
            "encoder_hidden_states": torch.randn(*context, generator=g),
            "return_dict": False,
        }
    denoiser = backbone.build_denoiser("cpu").requires_grad_(False).eval()
    return denoiser, backbone.family(), inputs


def forward(denoiser: nn.Module, inputs: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
    cast = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        out = denoiser(**cast)
    out = out[0] if isinstance(out, tuple) else out.sample
    return out.float()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def measure(name: str, dtype: torch.dtype) -> None:
    started = time.monotonic()
    denoiser, family, inputs = build(name)
    reference32 = forward(denoiser, inputs, torch.float32) if dtype != torch.float32 else None
    denoiser.to(dtype)
    reference = forward(denoiser, inputs, dtype)
    targets = fp8_targets(denoiser, family)
    converted = sum(linear.weight.numel() for _, _, linear in targets)
    total = sum(p.numel() for p in denoiser.parameters())
    print(
        f"{name} ({total:,} parameters; {len(targets)} linears holding {converted / total:.0%} of them stored in fp8), compute {dtype}:"
    )
    if reference32 is not None:
        print(f"  {dtype} model vs float32 model: {relative(reference, reference32):.2e}")
    for label, (block, scaled) in VARIANTS.items():
        with torch.no_grad():
            for parent, attr, linear in targets:
                setattr(parent, attr, Fp8Linear(linear, block, scaled))
        out = forward(denoiser, inputs, dtype)
        for parent, attr, linear in targets:  # back to the unconverted model
            setattr(parent, attr, linear)
        against32 = f"; vs float32 model: {relative(out, reference32):.2e}" if reference32 is not None else ""
        print(f"  fp8 {label:<10} vs {dtype} model: {relative(out, reference):.2e}{against32}")
    print(f"  ({time.monotonic() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", choices=["tiny", "tiny-wan", "wan"])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], action="append")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in args.models:
        for dtype in args.dtype or ["float32", "bfloat16"]:
            measure(name, getattr(torch, dtype))


if __name__ == "__main__":
    main()
