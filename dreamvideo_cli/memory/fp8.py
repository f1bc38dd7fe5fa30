"""fp8 storage of frozen linear weights (`--fp8`): e4m3 codes with one float32 scale per block
of `FP8_BLOCK` input features of each output row (per output row when the row does not split
into such blocks), turned back into the compute dtype inside each forward.

Why scaled: e4m3 keeps 3 mantissa bits over exponents 2^-6..2^8 (448 at most), with subnormals
below 2^-6 down to 2^-9. A trained transformer's weights are mostly |w| < 0.05, so a plain cast
puts most of them among the subnormals, where the spacing (2^-9 ~ 0.002) is as large as the
weights themselves (diffusion-pipe #350: pure noise). Dividing each block by its own
amax / 448 first moves the block's largest value to the top of the range, so every weight
keeps ~3 significant bits (relative rounding error <= 2^-4, ~2% on average).

Why a custom autograd Function rather than `F.linear(x, dequantized_weight)`: autograd would
save the dequantized [out, in] weight for the backward pass (the input's gradient needs it),
so without gradient checkpointing the frozen weights would be held again in the compute dtype,
once per layer. `_Fp8LinearFunction` saves the fp8 codes and scales (the parameters
themselves, nothing new) and dequantizes again in backward.

Only storage is fp8: the matmul runs in the compute dtype (native fp8 matmuls degrade output,
musubi-tuner docs/wan.md). Which layers: the `nn.Linear`s inside the units the denoiser's family
checkpoints (`DenoiserFamily.checkpoint_targets`: each DiT block, each UNet resnet/temporal
conv/transformer), except those that compute a modulation or an embedding (names containing
one of `_SKIPPED_NAMES`, e.g. UNet resnets' `time_emb_proj`) and anything inside an adapter.
Norms, embeddings, patch embedding, modulation tables and the final projection are outside
those Linears or outside the units, so they keep their dtype.

Measured (scripts/fp8_error.py, CPU, one denoiser forward, ||y_fp8 - y|| / ||y||; random weights):
| model | compute | fp8, scale per 64 | per row | plain cast | bf16 vs fp32, for scale |
|---|---|---|---|---|---|
| Wan 2.1 1.3B (98% of weights stored) | fp32 | 1.08e-2 | 1.16e-2 | 2.26e-2 | |
| Wan 2.1 1.3B | bf16 | 1.87e-2 | 1.86e-2 | 2.69e-2 | 1.56e-2 |
| tiny-wan (rows of 24: per row) | fp32 | 8.8e-3 | 8.8e-3 | 9.6e-3 | |
| tiny UNet3D (30%: convs stay) | fp32 | 5.1e-2 | 5.1e-2 | 5.8e-2 | 1.4e-2 (bf16) |
The adapters' gradients move by 0.8% (tiny-wan) and 5.8% (tiny) of their norm (tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dreamvideo_cli.adapters import ParallelAdapter
from dreamvideo_cli.backbone import DenoiserFamily
from dreamvideo_cli.memory.units import family_units

__all__ = [
    "FP8",
    "FP8_BLOCK",
    "FP8_MAX",
    "Fp8Linear",
    "convert_linears",
    "dequantize",
    "fp8_targets",
    "quantize",
]

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
# Input features that share one scale (musubi-tuner's fp8_scaled uses 64). Smaller blocks
# follow the weights more closely; each scale costs 4 bytes, i.e. 4/64 = 1/16 byte per weight.
FP8_BLOCK = 64
# A Linear whose path (inside its unit) contains one of these computes a modulation or an
# embedding: it stays in its dtype (musubi-tuner keeps norms, embeddings and modulation bf16).
_SKIPPED_NAMES = ("emb", "norm", "modulation", "adaln", "ada_ln", "time")


def _block_size(in_features: int, block: int | None) -> int:
    """Input features per scale: `block` when it divides the row, else the whole row."""
    return block if block and in_features % block == 0 else in_features


def quantize(
    weight: torch.Tensor, block: int | None = FP8_BLOCK, scaled: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] -> (codes [out, in] e4m3, scales [out, in // block] float32) with
    weight ~ codes * scale per block. `scaled=False` is the plain cast (every scale 1), kept to
    measure what the scale buys."""
    out_features, in_features = weight.shape
    size = _block_size(in_features, block)
    w = weight.detach().float().reshape(out_features, in_features // size, size)  # [out, blocks, size]
    if scaled:
        amax = w.abs().amax(dim=-1, keepdim=True)  # [out, blocks, 1]
        # An all-zero block keeps scale 1 (any scale codes zeros exactly).
        scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    else:
        scale = torch.ones(out_features, in_features // size, 1, device=weight.device)
    # Saturate: e4m3fn has no infinity, an out-of-range cast would give NaN (only the plain
    # cast can exceed 448; the scaled codes are <= 448 up to rounding of the division).
    codes = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return codes.reshape(out_features, in_features), scale.squeeze(-1)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """codes [out, in] e4m3, scale [out, blocks] -> weight [out, in] in `dtype`. Every e4m3
    value is exact in bf16, fp16 and fp32, so the only rounding is the product's, in `dtype`
    (the scale is rounded to `dtype` first: a relative 2^-9 in bf16, the same for the whole block)."""
    out_features, in_features = codes.shape
    blocks = scale.shape[1]
    w = codes.to(dtype).reshape(out_features, blocks, in_features // blocks)
    return (w * scale.to(dtype).unsqueeze(-1)).reshape(out_features, in_features)


def _compute_dtype(x: torch.Tensor, stored: torch.dtype) -> torch.dtype:
    """The dtype the matmul runs in: autocast's where it is on (as nn.Linear would run), else
    the dtype the weight had before conversion."""
    device = x.device.type
    if torch.is_autocast_enabled(device) and x.is_floating_point():
        return torch.get_autocast_dtype(device)
    return stored


class _Fp8LinearFunction(torch.autograd.Function):
    """y = x W^T + b with W dequantized from fp8 in forward and again in backward; saves only
    the codes and the scales (the frozen parameters), never a dequantized copy."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        codes: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        # x [..., in] -> [..., out]
        weight = dequantize(codes, scale, dtype)
        # Autocast (still on inside a Function's forward) would cast x to `dtype` too; without
        # it, a mismatched x raises as it would for nn.Linear.
        out = F.linear(x, weight, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(codes, scale)
        ctx.dtype, ctx.x_dtype = dtype, x.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        codes, scale = ctx.saved_tensors
        weight = dequantize(codes, scale, ctx.dtype)  # [out, in]
        grad_x = grad_out.to(ctx.dtype) @ weight  # [..., out] @ [out, in] -> [..., in]
        return grad_x.to(ctx.x_dtype), None, None, None, None


class Fp8Linear(nn.Module):
    """A frozen nn.Linear stored as e4m3 codes and per-block scales; computes in `dtype` (the
    Linear's dtype before conversion, or autocast's).

    `weight` [out, in] float8_e4m3fn and `scale` [out, in // block] float32 are frozen
    parameters (so FSDP, the memory tracker and block swap see them like any frozen weight);
    `bias` [out] keeps its dtype."""

    def __init__(self, linear: nn.Linear, block: int | None = FP8_BLOCK, scaled: bool = True) -> None:
        super().__init__()
        if linear.weight.requires_grad:
            raise ValueError("only frozen Linears are stored in fp8: a trained weight needs its full precision")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dtype = linear.weight.dtype
        codes, scale = quantize(linear.weight, block, scaled)
        self.weight = nn.Parameter(codes, requires_grad=False)
        self.scale = nn.Parameter(scale, requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _Fp8LinearFunction.apply(
            x, self.weight, self.scale, self.bias, _compute_dtype(x, self.dtype)
        )
        return out

    def dequantized(self) -> torch.Tensor:
        """The weight as the forward sees it, [out, in] in the stored compute dtype."""
        return dequantize(self.weight, self.scale, self.dtype)

    def _apply(self, fn: Any, recurse: bool = True) -> Fp8Linear:
        # nn.Module.to(dtype), .half(), .bfloat16() would cast the codes (and scales) like any
        # floating parameter and silently break them: cast the model before `store_fp8`.
        # Moving between devices is fine.
        super()._apply(fn, recurse)
        if self.weight.dtype != FP8 or self.scale.dtype != torch.float32:
            raise RuntimeError("an fp8-stored Linear cannot change dtype: cast the model before converting it")
        return self

    def extra_repr(self) -> str:
        blocks = self.scale.shape[1]
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, scales per row={blocks}, compute={self.dtype}"


def _linears(module: nn.Module, prefix: str = "") -> Iterator[tuple[nn.Module, str, nn.Linear, str]]:
    """(parent, attribute, Linear, dotted path) under `module`, not descending into adapters."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Linear):
            yield module, name, child, path
        elif isinstance(module, ParallelAdapter) and name == "adapter":
            continue  # the adapters train (or are composed) at full precision
        else:
            yield from _linears(child, path)


def fp8_targets(denoiser: nn.Module, family: DenoiserFamily) -> list[tuple[nn.Module, str, nn.Linear]]:
    """The Linears `store_fp8` converts: frozen, floating, inside a family unit, not a
    modulation or embedding projection, not in an adapter; (parent, attribute, Linear)."""
    targets: list[tuple[nn.Module, str, nn.Linear]] = []
    seen: set[int] = set()
    for unit in family_units(denoiser, family):
        for parent, name, linear, path in _linears(unit):
            if id(linear) in seen or any(s in path.lower() for s in _SKIPPED_NAMES):
                continue
            if linear.weight.requires_grad or not linear.weight.is_floating_point() or linear.weight.dtype == FP8:
                continue
            seen.add(id(linear))
            targets.append((parent, name, linear))
    return targets


def convert_linears(
    denoiser: nn.Module, family: DenoiserFamily, *, block: int | None = FP8_BLOCK, scaled: bool = True
) -> int:
    """Replace every `fp8_targets` Linear by an `Fp8Linear`, in place; returns the bytes saved
    (the Linears' weights before, minus codes and scales after)."""
    saved = 0
    targets = fp8_targets(denoiser, family)
    with torch.no_grad():
        while targets:
            # Popped so that each bf16 weight is freed as soon as it is replaced: holding the
            # list would keep the whole model twice (bf16 and fp8) until the end.
            parent, name, linear = targets.pop(0)
            before = linear.weight.nbytes
            converted = Fp8Linear(linear, block, scaled)
            setattr(parent, name, converted)
            del linear
            saved += before - converted.weight.nbytes - converted.scale.nbytes
    return saved
