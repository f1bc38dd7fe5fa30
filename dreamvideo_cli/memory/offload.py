"""Activation offload (`--offload-activations`): what the denoiser's forward saves for the
backward pass is copied to host memory at once and back to the device when the backward pass
needs it (torch's `save_on_cpu`, with four differences that matter here).

- Under non-reentrant gradient checkpointing (dv's) a checkpointed unit saves only its inputs,
  through the saved-tensor hooks around it: those inputs (the hidden states between blocks, the
  text context, the timestep projection) are what goes to the host, and the recomputation
  inside backward keeps its own tensors on the device. Without checkpointing every saved
  activation goes.
- Weights are not copied: a saved tensor on the storage of a parameter or buffer of the denoiser
  (W^T for a Linear's backward, an fp8 code tensor) is alive anyway. `save_on_cpu` would copy
  every frozen weight to the host once per step.
- The copy is the stretch of storage the tensor reads, and the tensor comes back as the same
  view of it (same strides and offset). `save_on_cpu` copies to a contiguous tensor, which
  changes the strides of broadcast or sliced tensors (an expanded bias, one half of a chunked
  projection) and with them the kernels the backward pass runs: its results differ in the last
  bits; these are bit-identical (tests). A small view of a large storage costs the stretch.
- Views of one storage saved several times in one pass (the text context, read by every
  block's cross-attention) share one copy.

The host copies are pinned when the host is a real CPU beside CUDA (torch's pinned allocator,
which rounds each up to a power of two and keeps them cached), so the copy out runs
asynchronously on the compute stream; the copy back is on the compute stream too, when the
backward pass unpacks the tensor (no prefetch: that step waits for it). On a CPU the host is
the compute device and the copy out is still made (so tests exercise it).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from dreamvideo_cli.memory.block_swap import storage_key

__all__ = ["ActivationOffload", "Offloaded"]


@dataclass(eq=False)
class _Region:
    """A copied stretch of a storage: elements [lo, hi) of `dtype`, on the host."""

    dtype: torch.dtype
    lo: int
    hi: int
    host: torch.Tensor  # [hi - lo] on the host
    pinned: bool  # page-locked: the copies are asynchronous
    on_device: weakref.ref[torch.Tensor] | None = None  # the copy back, while the backward pass holds it


@dataclass(frozen=True, eq=False)
class Offloaded:
    """A saved tensor as a view of a host region: its geometry, and the device it goes back to."""

    region: _Region
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # storage offset in elements, relative to the region's start
    device: torch.device


def _span(t: torch.Tensor) -> tuple[int, int]:
    """The elements [lo, hi) of t's storage that t reads (strides are never negative)."""
    lo = int(t.storage_offset())
    return lo, lo + 1 + sum((int(n) - 1) * int(s) for n, s in zip(t.size(), t.stride(), strict=True))


@dataclass(eq=False)
class ActivationOffload:
    """Saved tensors on `device` to `host` and back. `offloaded_bytes`: bytes copied to the
    host so far; `largest_pass_bytes`: the most copied in one forward pass."""

    denoiser: nn.Module
    device: torch.device
    host: torch.device = field(default_factory=lambda: torch.device("cpu"))
    offloaded_bytes: int = 0
    largest_pass_bytes: int = 0

    def __post_init__(self) -> None:
        self.device, self.host = torch.device(self.device), torch.device(self.host)
        self._weights: set[int] = set()  # storage keys of the denoiser's parameters and buffers
        # This pass's copied regions by storage, with a weak reference to the storage: one that
        # died may be followed by another at the same address.
        self._regions: dict[int, tuple[weakref.ref[torch.UntypedStorage], list[_Region]]] = {}
        self._pass_bytes = 0

    def begin_pass(self) -> None:
        """Before a forward pass: learn the weights' storages now (adapters attached since
        the last pass are parameters too)."""
        tensors = [*self.denoiser.parameters(), *self.denoiser.buffers()]
        self._weights = {k for k in (storage_key(t) for t in tensors) if k is not None}
        self._regions = {}
        self._pass_bytes = 0

    def end_pass(self) -> None:
        # The regions live on in the autograd graph; only this pass shares them.
        self._regions = {}
        self.largest_pass_bytes = max(self.largest_pass_bytes, self._pass_bytes)

    def pack(self, t: torch.Tensor) -> Offloaded | None:
        """The saved tensor's host copy: the stretch of its storage it reads, copied once per
        pass and shared by its other views (same values, same strides on the way back, so the
        backward pass computes bit for bit what it would have)."""
        if t.device != self.device or t.layout != torch.strided or t.numel() == 0:
            return None
        key = storage_key(t)
        if key is None or key in self._weights:
            return None
        storage = t.untyped_storage()
        lo, hi = _span(t)
        known = self._regions.get(key)
        if known is None or known[0]() is not storage:
            known = self._regions[key] = (weakref.ref(storage), [])
        region = next((r for r in known[1] if r.dtype == t.dtype and r.lo <= lo and hi <= r.hi), None)
        if region is None:
            pin = self.host.type == "cpu" and torch.cuda.is_available() and not isinstance(t, FakeTensor)
            host = torch.empty(hi - lo, dtype=t.dtype, device=self.host, pin_memory=pin)  # [hi - lo]
            host.copy_(t.detach().as_strided((hi - lo,), (1,), lo), non_blocking=pin)
            region = _Region(t.dtype, lo, hi, host, pin)
            known[1].append(region)
            self.offloaded_bytes += host.nbytes
            self._pass_bytes += host.nbytes
        return Offloaded(region, tuple(t.size()), tuple(t.stride()), int(t.storage_offset()) - lo, t.device)

    def unpack(self, packed: Offloaded) -> torch.Tensor:
        region = packed.region
        if packed.device == region.host.device:
            flat = region.host  # a CPU run: the copy is already where it is used
        else:
            found = region.on_device() if region.on_device is not None else None
            if found is None:  # one copy back per region while any of its views is in use
                found = region.host.to(packed.device, non_blocking=region.pinned)
                region.on_device = weakref.ref(found)
            flat = found
        return flat.as_strided(packed.size, packed.stride, packed.offset)
