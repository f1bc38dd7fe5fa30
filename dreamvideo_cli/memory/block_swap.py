"""Block swap (`--blocks-to-swap N`): the frozen weights of the last N units of the denoiser
(`DenoiserFamily.checkpoint_targets`, e.g. Wan's last N transformer blocks) live in host memory
and visit the GPU only while they compute.

How (musubi-tuner's `--block_swap_h2d_only`, which keeps a master copy on the host):
- On entering, each swapped unit's frozen parameters and buffers are packed into one flat byte
  buffer on the host (pinned, so host-to-device copies are asynchronous: one copy per unit),
  and each tensor is emptied ([0] where it was: staged parts enter from the host, and the
  placement that brings the rest of the denoiser to the GPU moves the empty tensors along): a
  unit that ran while absent would fail on the first shape check, not compute with stale weights.
- A forward pre-hook on every unit makes that unit present (its copy, fetched ahead or now,
  waited for; each tensor registered as a new Parameter viewing the copy) and starts fetching
  the next swapped unit in execution order on a side CUDA stream: one unit ahead. A forward hook
  releases the unit after it ran: the emptied tensors are registered again and the device copy
  is dropped, never copied back (frozen weights do not change). New tensors rather than changed
  ones because autograd and checkpointing keep a frozen Parameter itself, not a copy, for the
  backward pass: it must keep its values after the unit is released (the device copy lives as
  long as they hold it). Adapters inside a unit are never touched.
- Backward: under gradient checkpointing a unit's recomputation is a forward and goes through the
  same hooks (fetching the unit before it in execution order ahead). Without checkpointing,
  autograd saves the weights (or views of them, e.g. W^T) for the backward pass: `pack` turns
  any saved tensor on a present unit's device copy into a token (the unit and the view's
  geometry) and `unpack` makes the unit present again when the backward pass needs it; a unit is
  released when the last of its tokens was unpacked, and every unit at the end of the backward
  pass (a callback queued on the autograd engine). `levers.py` installs these as saved-tensor
  hooks around the denoiser's forward.
- Leaving puts every tensor back on the device it came from, with its values.

The order in which units run is observed during the first forward pass (the family's list order
is not always execution order: UNet3D lists `transformer_in` last) and used to pick the unit to
fetch ahead; a wrong guess costs a synchronous fetch, never a wrong result.

On a CPU the compute device is the host: by default a fetch is then no copy at all (the
registered tensors become views of the host buffer), and `copy=True` makes real copies (on
the same device), which is how the tests exercise the device path. `record=True` keeps the
events ("fetch", "compute", "backward", "release", unit) so a test can check the order of
residency; `max_resident` is the most units present or in flight at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils.hooks import RemovableHandle

from dreamvideo_cli.backbone import DenoiserFamily
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.memory.units import family_units, frozen_modules

__all__ = ["ALIGNMENT", "BlockSwap", "SwapEvent", "SwapToken", "storage_key", "swapping"]

# Bytes each tensor's place in a unit's flat buffer is aligned to: kernels load 16-byte vectors,
# and 256 matches what CUDA's allocator guarantees for a tensor of its own.
ALIGNMENT = 256

# Denoisers with a block swap entered: a second one on the same model would pack the first's
# emptied tensors and, fetching after it, register those over the real ones.
_ACTIVE: weakref.WeakSet[nn.Module] = weakref.WeakSet()

EventKind = Literal["fetch", "compute", "backward", "release"]
SwapEvent = tuple[EventKind, int]  # (what happened, the unit's index in checkpoint_targets)


def swapping(denoiser: nn.Module) -> bool:
    """Whether a block swap is applied to `denoiser` now."""
    return denoiser in _ACTIVE


def storage_key(t: torch.Tensor) -> int | None:
    """An identity for the storage under `t` (its views share it), or None for a tensor
    without one (sparse, nested, a wrapper subclass)."""
    try:
        return int(t.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _like(original: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """`data` as what `original` is: a frozen Parameter, or a plain tensor (a buffer)."""
    return nn.Parameter(data, requires_grad=False) if isinstance(original, nn.Parameter) else data


def _install(slot: _Slot, tensor: torch.Tensor) -> None:
    """Register `tensor` in every place of the slot (bypassing nn.Module's type checks)."""
    for module, name in slot.places:
        if name in module._parameters:
            module._parameters[name] = tensor  # type: ignore[assignment]
        else:
            module._buffers[name] = tensor


@dataclass(eq=False)
class _Slot:
    """One frozen tensor of a unit and the places it is registered in (a tied tensor has several)."""

    places: list[tuple[nn.Module, str]]  # (module, attribute) in `_parameters` or `_buffers`
    original: torch.Tensor  # the Parameter or buffer itself: registered, empty, while absent
    offset: int  # bytes into the unit's flat buffer
    shape: torch.Size
    dtype: torch.dtype
    home: torch.device  # where it was before entering; it goes back there on leaving


@dataclass(eq=False)
class _Unit:
    index: int  # position in checkpoint_targets
    module: nn.Module
    slots: list[_Slot]
    host: torch.Tensor  # uint8 [nbytes] on the host: the master copy
    copy: torch.Tensor | None = None  # uint8 [nbytes] on the compute device, fetched or present
    ready: Any = None  # the CUDA event the fetch recorded on the side stream, until waited for
    present: bool = False  # the registered tensors are views of `copy`


@dataclass(eq=False)
class _Counter:
    """Tokens of one unit from one forward pass not yet unpacked."""

    remaining: int = 0


@dataclass(frozen=True, eq=False)
class SwapToken:
    """A saved tensor that is (a view of) a swapped unit's weights, kept as where to find it
    rather than as the tensor, so the weights need not stay on the device until backward."""

    unit: _Unit
    counter: _Counter
    dtype: torch.dtype
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # storage offset, in elements of `dtype`


@dataclass(eq=False)
class BlockSwap:
    """The last `count` units of `family`'s units of `denoiser` kept on `host` and fetched to
    `device` around their use. Enter it (a context manager) after loading, with or without
    adapters attached and gradient checkpointing on; leave it to restore the model."""

    denoiser: nn.Module
    family: DenoiserFamily
    count: int
    device: torch.device
    host: torch.device = field(default_factory=lambda: torch.device("cpu"))
    copy: bool | None = None  # None: copy when device != host
    record: bool = False
    events: list[SwapEvent] = field(default_factory=list)
    max_resident: int = 0
    host_bytes: int = 0  # bytes of the host buffers (pinned when host is a real CPU beside CUDA)

    def __post_init__(self) -> None:
        self.device, self.host = torch.device(self.device), torch.device(self.host)
        self._units: list[nn.Module] = []
        self._swapped: dict[int, _Unit] = {}
        self._storages: dict[int, _Unit] = {}  # storage key of a present unit's copy -> the unit
        self._order: list[int] | None = None  # unit indices in execution order, once observed
        self._trace: list[int] = []
        self._counters: dict[int, _Counter] = {}  # this forward pass's token counters, per unit
        self._handles: list[RemovableHandle] = []
        self._registered: list[torch.Tensor] = []  # host buffers pinned with cudaHostRegister
        self._queued_task: int | None = None
        self._stream: Any = None
        self._copies = self.copy if self.copy is not None else self.device != self.host

    # -- entering and leaving ---------------------------------------------------------
    def __enter__(self) -> BlockSwap:
        if self.denoiser in _ACTIVE:
            raise RuntimeError("block swap is already applied to this denoiser")
        self._units = family_units(self.denoiser, self.family)
        if not 0 <= self.count <= len(self._units):
            raise DVError(
                f"--blocks-to-swap {self.count}: this denoiser has {len(self._units)} blocks",
                f"swap at most {len(self._units)}",
            )
        if self.device.type == "cuda" and self._copies:
            self._stream = torch.cuda.Stream(self.device)
        _ACTIVE.add(self.denoiser)
        first = len(self._units) - self.count
        for index in range(first, len(self._units)):
            self._swapped[index] = self._to_host(index, self._units[index])
        for index, unit in enumerate(self._units):
            self._handles.append(unit.register_forward_pre_hook(partial(self._before, index)))
            self._handles.append(unit.register_forward_hook(partial(self._after, index), always_call=True))
        self._handles.append(self.denoiser.register_forward_pre_hook(self._begin_pass))
        self._handles.append(self.denoiser.register_forward_hook(self._end_pass, always_call=True))
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the device copies just dropped go back to the driver
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._stream is not None:
            torch.cuda.synchronize(self.device)  # no copy may still read a host buffer
        with torch.no_grad():
            for unit in self._swapped.values():
                self._release(unit, record=False)
                for slot in unit.slots:
                    slot.original.data = self._view(unit.host, slot).to(slot.home, copy=True)
                    _install(slot, slot.original)
        for buffer in self._registered:
            torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())
        self._registered.clear()
        self._swapped.clear()
        self._storages.clear()
        _ACTIVE.discard(self.denoiser)

    def _to_host(self, index: int, module: nn.Module) -> _Unit:
        """The unit's frozen tensors packed into one host buffer; placeholders in their place."""
        slots: dict[int, _Slot] = {}  # by id of the tensor (a tied tensor is one slot)
        offset = 0
        for sub in frozen_modules(module):
            found: list[tuple[str, torch.Tensor]] = [
                (n, p) for n, p in sub._parameters.items() if p is not None and not p.requires_grad
            ]
            found += [(n, b) for n, b in sub._buffers.items() if b is not None]
            for name, t in found:
                slot = slots.get(id(t))
                if slot is None:
                    slot = slots[id(t)] = _Slot([], t, offset, t.shape, t.dtype, t.device)
                    offset = _align(offset + t.nbytes)
                slot.places.append((sub, name))
        host = self._host_buffer(max(offset, ALIGNMENT))
        unit = _Unit(index, module, list(slots.values()), host)
        with torch.no_grad():
            for slot in unit.slots:
                self._view(host, slot).copy_(slot.original)
                # Absent: the tensor itself, emptied ([0] where it was), so a unit run without
                # its weights fails on the first shape check.
                slot.original.data = torch.empty(0, dtype=slot.dtype, device=slot.home)
        self.host_bytes += host.nbytes
        return unit

    def _host_buffer(self, nbytes: int) -> torch.Tensor:
        """uint8 [nbytes] on the host, page-locked when the host is a real CPU beside a CUDA
        device. Pinned with cudaHostRegister rather than torch's pinned allocator, which rounds
        every allocation up to a power of two (a 700 MB Wan 14B block would take 1 GiB)."""
        buffer = torch.empty(nbytes, dtype=torch.uint8, device=self.host)
        if self.host.type == "cpu" and torch.cuda.is_available() and not isinstance(buffer, FakeTensor):
            # Flags 1: cudaHostRegisterPortable, as torch.cuda._pin_memory_utils registers.
            status = torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), nbytes, 1)
            if int(status) == 0:
                self._registered.append(buffer)
            else:  # e.g. a driver that refuses registration: torch's pinned allocator instead
                _clear_last_cuda_error()
                buffer = buffer.pin_memory()
        return buffer

    @staticmethod
    def _view(flat: torch.Tensor, slot: _Slot) -> torch.Tensor:
        """The slot's tensor inside a unit's flat byte buffer (host or device copy)."""
        nbytes = slot.shape.numel() * slot.dtype.itemsize
        return flat[slot.offset : slot.offset + nbytes].view(slot.dtype).view(slot.shape)

    # -- residency --------------------------------------------------------------------
    def host_buffers(self) -> list[torch.Tensor]:
        """The swapped units' master copies on the host (uint8 [bytes] each), made on entering:
        a memory tracker entered after this must `register` them to count them."""
        return [unit.host for unit in self._swapped.values()]

    def resident(self) -> list[int]:
        """Swapped units with a device copy now (present, or fetched ahead)."""
        return [i for i, unit in self._swapped.items() if unit.copy is not None]

    def _fetch(self, unit: _Unit) -> None:
        """Start copying the unit to the device (on the side stream when there is one)."""
        if unit.copy is not None:
            return
        if not self._copies:
            unit.copy = unit.host  # the compute device is the host: nothing to copy
        elif self._stream is not None:
            with torch.cuda.stream(self._stream):
                unit.copy = unit.host.to(self.device, non_blocking=True)
                unit.ready = torch.cuda.Event()
                unit.ready.record(self._stream)
        else:
            unit.copy = unit.host.to(self.device, copy=True)
        self._note("fetch", unit.index)
        self.max_resident = max(self.max_resident, len(self.resident()))

    def _present(self, unit: _Unit) -> None:
        """The unit's tensors become views of its device copy (fetched now if it was not)."""
        if unit.present:
            return
        self._fetch(unit)
        assert unit.copy is not None
        if unit.ready is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(unit.ready)
            # The copy was allocated on the side stream: its memory must not be reused before
            # the compute stream is done with it.
            unit.copy.record_stream(stream)
            unit.ready = None
        for slot in unit.slots:
            # A new tensor each time, never a changed one: what autograd or a checkpoint saved
            # from an earlier visit (the Parameter itself) must keep its values until used.
            _install(slot, _like(slot.original, self._view(unit.copy, slot)))
        unit.present = True
        key = storage_key(unit.copy)
        if key is not None:
            self._storages[key] = unit

    def _release(self, unit: _Unit, record: bool = True) -> None:
        """Drop the unit's device copy (never copied back) and put the placeholders back."""
        if unit.copy is None:
            return
        if unit.present:
            for slot in unit.slots:
                _install(slot, slot.original)
            key = storage_key(unit.copy)
            if key is not None:
                self._storages.pop(key, None)
        unit.copy, unit.ready, unit.present = None, None, False
        if record:
            self._note("release", unit.index)

    def release_all(self) -> None:
        for unit in self._swapped.values():
            self._release(unit)

    def _fetch_next(self, index: int, backward: bool) -> None:
        """Fetch the next swapped unit that will run after unit `index` (the one before it in
        execution order when going backward): one unit ahead."""
        order = self._order if self._order is not None and index in self._order else list(range(len(self._units)))
        position = order.index(index)
        ahead: Iterator[int] = reversed(order[:position]) if backward else iter(order[position + 1 :])
        following = next((self._swapped[i] for i in ahead if i in self._swapped), None)
        for unit in self._swapped.values():  # an earlier guess that did not run next (first pass)
            if unit.copy is not None and not unit.present and unit is not following:
                self._release(unit)
        if following is not None:
            self._fetch(following)

    def _note(self, kind: EventKind, index: int) -> None:
        if self.record:
            self.events.append((kind, index))

    # -- hooks ------------------------------------------------------------------------
    def _begin_pass(self, module: nn.Module, args: Any) -> None:
        self._trace = []
        self._counters = {}

    def _end_pass(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._order is None and self._trace:
            self._order = list(dict.fromkeys(self._trace))  # first call of each unit, in order
        for unit in self._swapped.values():  # fetched ahead but never run (a wrong guess)
            if not unit.present:
                self._release(unit)

    def _before(self, index: int, module: nn.Module, args: Any) -> None:
        backward = torch._C._current_graph_task_id() != -1  # a checkpoint's recomputation
        unit = self._swapped.get(index)
        if unit is not None:
            self._present(unit)
            self._note("compute", index)
            if backward:
                self._release_at_end_of_backward()
        if not backward:
            self._trace.append(index)
        self._fetch_next(index, backward)

    def _after(self, index: int, module: nn.Module, args: Any, output: Any) -> None:
        unit = self._swapped.get(index)
        if unit is not None:
            self._release(unit)

    def _release_at_end_of_backward(self) -> None:
        task = torch._C._current_graph_task_id()
        if task != -1 and task != self._queued_task:
            self._queued_task = task
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)  # type: ignore[attr-defined]

    def _end_of_backward(self) -> None:
        self._queued_task = None
        self.release_all()

    # -- saved tensors (installed by levers.py around the denoiser's forward) ----------
    def pack(self, t: torch.Tensor) -> SwapToken | None:
        """A token for a saved tensor on a present unit's device copy, else None."""
        if not self._storages:
            return None
        key = storage_key(t)
        unit = self._storages.get(key) if key is not None else None
        if unit is None:
            return None
        counter = self._counters.setdefault(unit.index, _Counter())
        counter.remaining += 1
        return SwapToken(unit, counter, t.dtype, tuple(t.size()), tuple(t.stride()), int(t.storage_offset()))

    def unpack(self, token: SwapToken) -> torch.Tensor:
        """The saved tensor again, from the unit's device copy (fetched if it was released)."""
        unit = token.unit
        if not unit.present:
            self._present(unit)
            self._note("backward", unit.index)
            self._release_at_end_of_backward()
            self._fetch_next(unit.index, backward=True)
        assert unit.copy is not None
        t = unit.copy.view(token.dtype).as_strided(token.size, token.stride, token.offset)
        token.counter.remaining -= 1
        if token.counter.remaining == 0:  # the unit's last saved tensor of its forward pass
            self._release(unit)
        return t


def _clear_last_cuda_error() -> None:
    """A failed CUDA runtime call stays the thread's last error until something reads it, and
    torch reads it after its next kernel launch, raising it there as that kernel's failure:
    read it now (cudaGetLastError, from the runtime library torch loaded; torch does not
    expose it)."""
    import ctypes

    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
        path = next(line.split()[-1] for line in maps if "libcudart.so" in line)
        ctypes.CDLL(path).cudaGetLastError()
    except (OSError, StopIteration, AttributeError):
        pass  # not Linux, or a runtime linked into torch itself: nothing to read it with
