"""Models as fake tensors, without weights: build on the meta device (`Backbone.build_denoiser`
with device="meta", adapters under `torch.device("meta")`), cast there with the loader's own
dtype rules, then `materialize` under a `FakeTensorMode`. A 14B transformer takes well under
a second this way; nothing is initialised.

Do not build modules inside a FakeTensorMode and convert them afterwards: `nn.Module.to`
swaps fake parameters (`torch.utils.swap_tensors`), and a fake parameter that an in-place
initialiser touched (every nn.Linear's `reset_parameters`) carries a weak reference that
makes the swap fail ("Cannot swap t1 because it has weakref associated with it").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack

__all__ = ["CudaRules", "checkpoint_contexts", "fake_cuda_autocast", "gpu_autocast", "materialize"]


def _is_meta(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return t.device.type == "meta" and not isinstance(t, FakeTensor)


def materialize(module: nn.Module, device: str | torch.device) -> nn.Module:
    """Give every meta parameter and buffer of `module` uninitialised storage on `device`
    (fake storage when called under a FakeTensorMode), with the same shape, dtype and
    `requires_grad`; shared (tied) tensors stay shared. Tensors not on the meta device are
    left alone. In place; returns `module`."""
    made: dict[int, torch.Tensor] = {}  # id(meta tensor) -> its replacement

    def replace(t: torch.Tensor) -> torch.Tensor:
        new = made.get(id(t))
        if new is None:
            new = torch.empty(t.shape, dtype=t.dtype, device=device)
            if isinstance(t, nn.Parameter):
                new = nn.Parameter(new, requires_grad=t.requires_grad)
            made[id(t)] = new
        return new

    with torch.no_grad():
        for sub in module.modules():
            for name, param in sub._parameters.items():
                if param is not None and _is_meta(param):
                    sub._parameters[name] = replace(param)  # type: ignore[assignment]
            for name, buffer in sub._buffers.items():
                if buffer is not None and _is_meta(buffer):
                    sub._buffers[name] = replace(buffer)
    return module


# -- CUDA autocast's rules on a CPU stand-in ------------------------------------------
# Functions CUDA autocast runs in float32 (its "fp32" and "fp32_append_dtype" lists,
# aten/src/ATen/autocast_mode.cpp; torch.testing._internal.autocast_test_lists' CUDA
# torch_fp32, nn_fp32 and methods_fp32), as the Python callables that reach them. CPU
# autocast leaves most of these in bf16; on CUDA a norm's output is float32.
_F = torch.nn.functional
_T = torch.Tensor
_FP32: frozenset[object] = frozenset(
    {
        _F.group_norm, _F.layer_norm, torch.group_norm, torch.layer_norm,
        torch.native_layer_norm, torch.native_group_norm,
        torch.exp, _T.exp, torch.expm1, _T.expm1, torch.log, _T.log, torch.log10, _T.log10,
        torch.log2, _T.log2, torch.log1p, _T.log1p, torch.reciprocal, _T.reciprocal, torch.rsqrt, _T.rsqrt,
        torch.sinh, _T.sinh, torch.cosh, _T.cosh, torch.tan, _T.tan, torch.acos, _T.acos, torch.asin, _T.asin,
        torch.erfinv, _T.erfinv, torch.pow, _T.pow, _T.__pow__, _T.__rpow__, _F.softplus,
        torch.cosine_similarity, _F.cosine_similarity, torch.cdist, torch.dist, _T.dist, torch.pdist, _F.pdist,
        torch.renorm, _T.renorm, torch.logsumexp, _T.logsumexp, torch.norm, _T.norm,
        _F.mse_loss, _F.l1_loss, _F.smooth_l1_loss, _F.huber_loss, _F.kl_div, _F.nll_loss,
        _F.binary_cross_entropy_with_logits, _F.poisson_nll_loss, _F.cosine_embedding_loss,
        _F.hinge_embedding_loss, _F.margin_ranking_loss, _F.multilabel_margin_loss, _F.soft_margin_loss,
        _F.triplet_margin_loss, _F.multi_margin_loss,
    }
)  # fmt: skip
# Functions CUDA autocast gives dtype=float32 when the caller gave none ("fp32_set_opt_dtype").
_FP32_OUTPUT: frozenset[object] = frozenset(
    {
        _F.softmax, _F.log_softmax, torch.softmax, _T.softmax, torch.log_softmax, _T.log_softmax,
        torch.sum, _T.sum, torch.prod, _T.prod, torch.cumsum, _T.cumsum, torch.cumprod, _T.cumprod,
        torch.linalg.vector_norm, torch.linalg.matrix_norm,
    }
)  # fmt: skip
# F.interpolate reaches upsample_nearest*/linear/bilinear/bicubic/trilinear, all float32 on
# CUDA, except mode="area" (adaptive average pooling, not on the list).
_INTERPOLATE: frozenset[object] = frozenset({_F.interpolate, _F.upsample, _F.upsample_nearest, _F.upsample_bilinear})
# rms_norm: on CUDA the fused kernel (output and rstd saved) where the CPU composes pow,
# mean, rsqrt and mul, saving more; float32 under CUDA autocast in recent torch (2.15), in the
# input's dtype in older (2.11): `_rms_norm_in_fp32` asks this torch.
_RMS_NORM: frozenset[object] = frozenset({_F.rms_norm, torch.rms_norm})
_LOW = (torch.bfloat16, torch.float16)


def _to_fp32(value: object) -> object:
    if isinstance(value, torch.Tensor) and value.dtype in _LOW:
        return value.float()
    if isinstance(value, list | tuple):
        return type(value)(_to_fp32(v) for v in value)
    return value


class CudaRules(TorchFunctionMode):
    """What a CUDA step does differently from the same code on CPU tensors, applied to fake
    CPU tensors standing for a GPU. `rms_norm` takes CUDA's fused kernel. While CPU autocast
    is on, what CUDA autocast does and CPU autocast does not:
    norms, softmax, reductions, pow/exp/rsqrt and losses run in float32 (their bf16 inputs
    cast first, outputs float32). Lower-precision ops (matmuls, convolutions, linear, SDPA)
    are on both devices' lists and stay CPU autocast's.

    Enter it around the step run on fake CPU tensors standing for a GPU, and run the step's
    autocast regions on "cpu" (`gpu_autocast`). Activation checkpointing recomputes the
    forward inside `backward()`, where torch.utils.checkpoint restores CPU autocast but no
    function mode: pass `context_fn=checkpoint_contexts` to `checkpoint` (a no-op unless
    these rules are active).

    The "promote" list (addcmul, addcdiv, atan2, cross, dot, index_put, scatter_add, ...)
    is not emulated: none of dv's denoisers uses those on activations. A test probes every
    rule against CUDA autocast itself, run on fake CUDA tensors (its forward works without a
    driver).
    """

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _RMS_NORM:
            return _fused_rms_norm(*args, **kwargs)
        if func in _INTERPOLATE:
            mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
            if mode != "area" and torch.is_autocast_enabled("cpu"):
                args = tuple(_to_fp32(a) for a in args)
        elif func in _FP32 and torch.is_autocast_enabled("cpu"):
            args = tuple(_to_fp32(a) for a in args)
            kwargs = {k: _to_fp32(v) for k, v in kwargs.items()}
        elif func in _FP32_OUTPUT and torch.is_autocast_enabled("cpu") and _wants_fp32_output(args, kwargs):
            kwargs = {**kwargs, "dtype": torch.float32}
        return func(*args, **kwargs)


@contextmanager
def fake_cuda_autocast() -> Iterator[None]:
    """CUDA autocast (bf16) switched on directly, for fake CUDA tensors: their forward needs no
    driver, where `torch.autocast("cuda")` would refuse a machine without one."""
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", torch.bfloat16)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", False)
        torch.clear_autocast_cache()


@cache
def _rms_norm_in_fp32() -> bool:
    """Whether this torch's CUDA autocast gives rms_norm float32: asked of CUDA autocast
    itself, on fake CUDA tensors, once per process and only when a plan needs it (the first
    ask takes most of a second). True where it cannot be asked."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    try:
        with FakeTensorMode(), fake_cuda_autocast():
            x = torch.randn(2, 8, device="cuda", dtype=torch.bfloat16)
            return bool(_F.rms_norm(x, [8]).dtype == torch.float32)
    except Exception:
        return True


def _fused_rms_norm(
    input: torch.Tensor,
    normalized_shape: list[int],
    weight: torch.Tensor | None = None,
    eps: float | None = None,
) -> torch.Tensor:
    if torch.is_autocast_enabled("cpu") and _rms_norm_in_fp32():
        input = input.float() if input.dtype in _LOW else input
        weight = weight.float() if weight is not None and weight.dtype in _LOW else weight
    out: torch.Tensor = torch._fused_rms_norm(input, list(normalized_shape), weight, eps)[0]
    return out


def _wants_fp32_output(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """CUDA's fp32_set_opt_dtype: no dtype given and a floating first argument."""
    if kwargs.get("dtype") is not None:
        return False
    first = args[0] if args else kwargs.get("input", kwargs.get("self"))
    return isinstance(first, torch.Tensor) and first.is_floating_point() and first.dtype != torch.float64


def checkpoint_contexts() -> tuple[AbstractContextManager[Any], AbstractContextManager[Any]]:
    """For `torch.utils.checkpoint.checkpoint(..., use_reentrant=False, context_fn=...)`: the
    recomputation runs under `CudaRules` when the original forward did, else nothing."""
    active = any(isinstance(m, CudaRules) for m in _get_current_function_mode_stack())
    return nullcontext(), CudaRules() if active else nullcontext()


def gpu_autocast(dtype: torch.dtype = torch.bfloat16) -> torch.autocast:
    """The autocast region of a GPU step, on fake CPU tensors standing for the GPU: CPU
    autocast to `dtype`, which follows CUDA's rules while `CudaRules` is active (and in
    checkpoint recomputations given `context_fn=checkpoint_contexts`)."""
    return torch.autocast("cpu", dtype=dtype)
