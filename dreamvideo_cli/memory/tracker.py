"""A live-bytes memory tracker: run a callable (a training step, an encode) once and get the
peak memory per device, split into what holds it.

It counts tensor *storages*, not tensors: a view shares its base's storage, so a storage
is counted once, with its `nbytes()`, from the moment an operator first returns a tensor on
it until the storage dies (a weak reference on `untyped_storage()`, which torch keeps alive
exactly as long as the C++ storage). Operators are seen through a `TorchDispatchMode`, so
the same code measures a real run (real CPU or CUDA tensors) and a fake one
(`FakeTensorMode`: shapes, dtypes and devices without data), and the two agree byte for
byte when the fake tensors have the real ones' storage sizes.

Categories (`Category`): frozen weights (parameters with `requires_grad=False` and
buffers), trainable parameters, their gradients, optimizer state (and whatever the
optimizer's step allocates), activations and temporaries (everything else made while
tracking), and `CACHE`: tensors a caller registers as kept for the run (cached latents
and text embeddings). Anything alive before tracking starts is invisible unless registered
(`MemoryTracker.register`).

Devices: each storage counts to its tensor's device type, renamed by `devices`. There is
no fake CUDA for a whole training step on a machine without a CUDA driver (torch 2.15: the
autograd engine's `GraphTask::stash_current_streams` asks CUDA for a primary context and
raises), so a planner runs the GPU's work on fake "cpu" tensors and the host's on fake
"meta" tensors and renames them with `PLANNING_DEVICES`. Sizes on a CUDA device are rounded
up to the caching allocator's 512-byte blocks (`torch.cuda.max_memory_allocated` counts
them so).

What it does not see: memory an operator allocates and frees inside its kernel (cuBLAS and
cuDNN workspaces, the CPU's oneDNN scratch), the CUDA context, the caching allocator's
reserved-but-free blocks, and host memory that is not a tensor (the Python process itself,
memory-mapped checkpoint files): add those as fixed costs (`MemoryTracker.add_fixed`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_iter

__all__ = [
    "PLANNING_DEVICES",
    "Category",
    "DevicePeak",
    "MemoryReport",
    "MemoryTracker",
    "Moment",
    "track",
]

# Fake "cpu" tensors stand for the GPU, fake "meta" tensors for host memory (see the module
# docstring: fake CUDA cannot run a backward pass without a driver).
PLANNING_DEVICES: Mapping[str, str] = {"cpu": "cuda", "meta": "cpu"}
# Bytes an allocation is rounded up to, per reported device type: the CUDA caching
# allocator hands out multiples of 512 bytes (c10/cuda/CUDACachingAllocator.cpp, kMinBlockSize).
DEFAULT_GRANULARITY: Mapping[str, int] = {"cuda": 512}
HOST = "cpu"

Phase = Literal["forward", "backward", "optimizer"]


class Category(StrEnum):
    FROZEN = "frozen"  # parameters with requires_grad=False, and buffers
    TRAINABLE = "trainable"  # parameters with requires_grad=True
    GRADIENT = "gradient"  # .grad of trainable parameters
    OPTIMIZER = "optimizer"  # optimizer state, and what optimizer.step() allocates
    ACTIVATION = "activation"  # everything else made while tracking: activations, temporaries
    CACHE = "cache"  # tensors registered as kept for the run: cached latents, text embeddings


@dataclass(frozen=True)
class Moment:
    """When a device reached its peak."""

    phase: Phase  # the optimizer's step, inside a backward pass, or else "forward"
    op: str  # the operator whose outputs made the peak, e.g. "aten.convolution.default"
    where: str  # the innermost module (forward), the autograd node (backward) or the optimizer's class
    section: str  # the caller's label (`MemoryTracker.section`), "" outside any
    index: int  # operators dispatched before it


@dataclass(frozen=True)
class DevicePeak:
    device: str  # the reported device type: "cuda", "cpu", ...
    peak: int  # bytes live at the peak (fixed costs included)
    at_peak: Mapping[Category, int]  # `peak` by category
    moment: Moment | None  # None: the peak is what was live when tracking began
    start: int  # bytes live when tracking began (registered tensors and fixed costs)
    end: int  # bytes live when tracking ended
    largest: Mapping[Category, int]  # each category's own maximum (not at the same moment)
    fixed: int = 0  # bytes added with `add_fixed`, included in every figure above

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "peak": self.peak,
            "at_peak": {str(k): v for k, v in self.at_peak.items()},
            "moment": None if self.moment is None else vars(self.moment).copy(),
            "start": self.start,
            "end": self.end,
            "largest": {str(k): v for k, v in self.largest.items()},
            "fixed": self.fixed,
        }


@dataclass(frozen=True)
class MemoryReport:
    devices: Mapping[str, DevicePeak]  # by reported device type
    ops: int  # operators dispatched while tracking

    @property
    def gpu(self) -> DevicePeak | None:
        """The peak of the first device that is not the host."""
        return next((d for name, d in self.devices.items() if name != HOST), None)

    @property
    def host(self) -> DevicePeak | None:
        return self.devices.get(HOST)

    def peak(self, device: str) -> int:
        found = self.devices.get(device)
        return 0 if found is None else found.peak

    def as_dict(self) -> dict[str, Any]:
        return {"devices": {k: v.as_dict() for k, v in self.devices.items()}, "ops": self.ops}

    def describe(self) -> str:
        """A few lines for people: per device, the peak and its split in GiB."""
        lines = []
        for name, d in self.devices.items():
            split = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in d.at_peak.items() if v)
            where = "" if d.moment is None else f" in {d.moment.phase} at {d.moment.op} ({d.moment.where})"
            lines.append(f"{name}: peak {d.peak_gib:.2f} GiB{where}: {split}")
        return "\n".join(lines)


@dataclass
class _Record:
    device: str
    category: Category
    nbytes: int
    ref: weakref.ref[torch.UntypedStorage] | None = None


@dataclass
class _Device:
    live: dict[Category, int] = field(default_factory=lambda: dict.fromkeys(Category, 0))
    total: int = 0
    peak: int = 0
    at_peak: dict[Category, int] = field(default_factory=lambda: dict.fromkeys(Category, 0))
    moment: Moment | None = None
    largest: dict[Category, int] = field(default_factory=lambda: dict.fromkeys(Category, 0))
    start: int = 0
    fixed: int = 0


Trackable = nn.Module | torch.optim.Optimizer | torch.Tensor | Iterable[Any]


class MemoryTracker(TorchDispatchMode):
    """Counts live tensor storages per device and category while it is entered.

        tracker = MemoryTracker()
        tracker.register(denoiser, adapters, optimizer)   # made before tracking
        tracker.register(latents, category=Category.CACHE)
        with tracker:
            step()
        report = tracker.report()

    Register modules, optimizers and tensors that exist before tracking starts, or that were
    made while tracking and should not count as activations (a module built inside). Enter
    it inside any `FakeTensorMode` or outside: either order works.

    `devices` renames tensor device types (`PLANNING_DEVICES` for a fake plan); device types
    not renamed keep their name, and "meta" tensors outside a fake plan hold no memory and
    are skipped. `granularity` rounds each storage up per reported device type.
    """

    def __init__(
        self,
        *,
        devices: Mapping[str, str] | None = None,
        granularity: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self._rename = dict(devices or {})
        self._granularity = dict(DEFAULT_GRANULARITY if granularity is None else granularity)
        self._records: dict[int, _Record] = {}  # id(storage) -> its record, while it lives
        self._devices: dict[str, _Device] = {}
        self._modules: list[weakref.ref[nn.Module]] = []
        self._optimizers: list[weakref.ref[torch.optim.Optimizer]] = []
        self._leaves: list[weakref.ref[torch.Tensor]] = []  # registered tensors that train
        self._handles: list[Any] = []
        self._in_optimizer = 0
        self._optimizer_name = ""
        self._module_names: dict[int, str] = {}
        self._module_stack: list[str] = []
        self._section = ""
        self._ops = 0
        self._op = ""
        self._entered = False

    # -- what to count ---------------------------------------------------------------
    def register(
        self, *objects: Trackable, category: Category | None = None, device: str | None = None, pinned: bool = False
    ) -> None:
        """Count these from now on (or reclassify them if already counted).

        Modules: parameters as FROZEN or TRAINABLE by `requires_grad`, buffers as FROZEN,
        existing gradients as GRADIENT; gradients made later become GRADIENT when they are
        accumulated. Optimizers: their state as OPTIMIZER. Tensors: as `category`, or by
        `requires_grad` for a parameter, else CACHE. `device` overrides where the given
        tensors count (e.g. "cpu" for host copies made on a fake stand-in device). `pinned`:
        page-locked host memory, which CUDA's caching host allocator rounds up to a power of
        two per allocation (pin one flat buffer per block, not each weight).
        """
        for obj in objects:
            if isinstance(obj, nn.Module):
                self._register_module(obj, category, device, pinned=pinned)
            elif isinstance(obj, torch.optim.Optimizer):
                self._optimizers.append(weakref.ref(obj))
                self._register_optimizer_state(obj, device)
            elif isinstance(obj, torch.Tensor):
                self._register_tensor(obj, category or _tensor_category(obj), device, pinned)
                if obj.requires_grad and obj.is_leaf:
                    self._leaves.append(weakref.ref(obj))
                    if self._entered:
                        self._handles.append(obj.register_post_accumulate_grad_hook(self._on_grad))
            elif isinstance(obj, Mapping):
                self.register(*obj.values(), category=category, device=device, pinned=pinned)
            elif isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
                self.register(*obj, category=category, device=device, pinned=pinned)
            elif obj is not None:
                raise TypeError(f"cannot track a {type(obj).__name__}")

    def add_fixed(self, device: str, nbytes: int, category: Category = Category.CACHE) -> None:
        """A fixed cost on a reported device that no tensor shows (the CUDA context, a
        memory-mapped checkpoint): counted from now on, in every figure."""
        dev = self._device(device)
        dev.fixed += nbytes
        self._add(dev, category, nbytes)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Label the peaks reached inside (e.g. "encode", "step")."""
        previous, self._section = self._section, name
        try:
            yield
        finally:
            self._section = previous

    def live(self, device: str) -> int:
        """Bytes live now on a reported device."""
        found = self._devices.get(device)
        return 0 if found is None else found.total

    def reset_peak(self) -> None:
        """Forget the peaks so far (keep what is live): e.g. after a warm-up step."""
        for dev in self._devices.values():
            dev.peak = dev.total
            dev.at_peak = dict(dev.live)
            dev.largest = dict(dev.live)
            dev.moment = None
            dev.start = dev.total

    def report(self) -> MemoryReport:
        devices = {
            name: DevicePeak(
                device=name,
                peak=d.peak,
                at_peak=dict(d.at_peak),
                moment=d.moment,
                start=d.start,
                end=d.total,
                largest=dict(d.largest),
                fixed=d.fixed,
            )
            for name, d in self._devices.items()
            if d.peak or d.total
        }
        return MemoryReport(devices=devices, ops=self._ops)

    # -- entering --------------------------------------------------------------------
    def __enter__(self) -> MemoryTracker:
        for ref in self._modules:
            module = ref()
            if module is not None:  # parameters added since registration (adapters attached)
                self._register_module(module, None, None, remember=False)
        for dev in self._devices.values():
            dev.start = dev.total
            dev.peak = max(dev.peak, dev.total)
        self._handles = [
            register_optimizer_step_pre_hook(self._before_step),
            register_optimizer_step_post_hook(self._after_step),
            nn.modules.module.register_module_forward_pre_hook(self._enter_module),
            nn.modules.module.register_module_forward_hook(self._leave_module, always_call=True),
        ]
        for param in self._trainable():
            self._handles.append(param.register_post_accumulate_grad_hook(self._on_grad))
        self._entered = True
        super().__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        super().__exit__(*args)
        self._entered = False
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._module_stack = []
        self._in_optimizer = 0

    # -- the dispatch hook ----------------------------------------------------------
    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_iter(out) if isinstance(t, torch.Tensor)]
        if tensors:  # not a query (prim.device, sym_size, is_contiguous, ...)
            self._ops += 1
            self._op = str(func)
            category = Category.OPTIMIZER if self._in_optimizer else Category.ACTIVATION
            for t in tensors:
                self._count(t, category)
        return out

    # -- bookkeeping -----------------------------------------------------------------
    def _device(self, name: str) -> _Device:
        dev = self._devices.get(name)
        if dev is None:
            dev = self._devices[name] = _Device()
        return dev

    def _device_of(self, t: torch.Tensor) -> str | None:
        kind = t.device.type
        name = self._rename.get(kind, kind)
        if name == "meta" and kind == "meta":
            return None  # a meta tensor outside a plan holds no memory
        return name

    def _size(self, device: str, nbytes: int) -> int:
        unit = self._granularity.get(device, 1)
        return math.ceil(nbytes / unit) * unit if unit > 1 else nbytes

    def _count(
        self, t: torch.Tensor, category: Category, device: str | None = None, force: bool = False, pinned: bool = False
    ) -> None:
        if is_traceable_wrapper_subclass(t):  # e.g. an fp8 or sharded tensor: its inner tensors hold the memory
            names, _ = t.__tensor_flatten__()
            for name in names:
                self._count(getattr(t, name), category, device, force, pinned)
            return
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse, nested, or no storage at all
            return
        key = id(storage)
        record = self._records.get(key)
        if record is not None:
            nbytes = self._size(record.device, storage.nbytes())
            if nbytes != record.nbytes:  # resized in place (resize_, an out= argument)
                dev = self._device(record.device)
                self._add(dev, record.category, nbytes - record.nbytes)
                record.nbytes = nbytes
            if force and (record.category != category or (device is not None and device != record.device)):
                self._forget(record)
                record.category = category
                record.device = device or record.device
                self._add(self._device(record.device), category, record.nbytes)
            return
        name = device or self._device_of(t)
        if name is None:
            return
        nbytes = storage.nbytes()
        if pinned and nbytes:  # CUDA's pinned host allocator hands out powers of two
            nbytes = 1 << (nbytes - 1).bit_length()
        record = _Record(name, category, self._size(name, nbytes))
        record.ref = weakref.ref(storage, lambda _, key=key: self._free(key))  # type: ignore[misc]
        self._records[key] = record
        if record.nbytes:
            self._add(self._device(name), category, record.nbytes)

    def _free(self, key: int) -> None:
        record = self._records.pop(key, None)
        if record is not None:
            self._forget(record)

    def _forget(self, record: _Record) -> None:
        dev = self._device(record.device)
        dev.live[record.category] -= record.nbytes
        dev.total -= record.nbytes

    def _add(self, dev: _Device, category: Category, nbytes: int) -> None:
        dev.live[category] += nbytes
        dev.total += nbytes
        if dev.live[category] > dev.largest[category]:
            dev.largest[category] = dev.live[category]
        if dev.total > dev.peak:
            dev.peak = dev.total
            dev.at_peak = dict(dev.live)
            dev.moment = self._moment() if self._entered else None

    def _moment(self) -> Moment:
        if self._in_optimizer:
            phase: Phase = "optimizer"
        elif torch._C._current_graph_task_id() != -1:
            phase = "backward"
        else:
            phase = "forward"
        if phase == "backward":
            node = torch._C._current_autograd_node()
            where = node.name() if node is not None else ""
        elif phase == "optimizer":
            where = self._optimizer_name
        else:
            where = self._module_stack[-1] if self._module_stack else ""
        return Moment(phase=phase, op=self._op, where=where, section=self._section, index=self._ops)

    def _register_tensor(self, t: torch.Tensor, category: Category, device: str | None, pinned: bool = False) -> None:
        self._count(t, category, device, force=True, pinned=pinned)

    def _register_module(
        self,
        module: nn.Module,
        category: Category | None,
        device: str | None,
        remember: bool = True,
        pinned: bool = False,
    ) -> None:
        if remember:
            self._modules.append(weakref.ref(module))
            for name, sub in module.named_modules():
                self._module_names.setdefault(id(sub), name or type(module).__name__)
        for param in module.parameters():
            self._register_tensor(param, category or _tensor_category(param), device, pinned)
            if param.grad is not None:
                self._register_tensor(param.grad, Category.GRADIENT, device)
        for buffer in module.buffers():
            self._register_tensor(buffer, category or Category.FROZEN, device, pinned)

    def _register_optimizer_state(self, optimizer: torch.optim.Optimizer, device: str | None = None) -> None:
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    self._register_tensor(value, Category.OPTIMIZER, device)

    def _trainable(self) -> Iterator[torch.Tensor]:
        seen: set[int] = set()
        modules = (m for m in (ref() for ref in self._modules) if m is not None)
        optimizers = (o for o in (ref() for ref in self._optimizers) if o is not None)
        params: list[torch.Tensor] = [p for m in modules for p in m.parameters()]
        params += [p for o in optimizers for g in o.param_groups for p in g["params"]]
        params += [t for t in (ref() for ref in self._leaves) if t is not None]
        for p in params:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                yield p

    # -- hooks -----------------------------------------------------------------------
    def _on_grad(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self._register_tensor(param.grad, Category.GRADIENT, None)

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._in_optimizer += 1
        self._optimizer_name = type(optimizer).__name__
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._register_tensor(p.grad, Category.GRADIENT, None)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._in_optimizer = max(0, self._in_optimizer - 1)
        self._register_optimizer_state(optimizer)

    def _enter_module(self, module: nn.Module, inputs: Any) -> None:
        self._module_stack.append(self._module_names.get(id(module), type(module).__name__))

    def _leave_module(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._module_stack:
            self._module_stack.pop()


def _tensor_category(t: torch.Tensor) -> Category:
    if isinstance(t, nn.Parameter):
        return Category.TRAINABLE if t.requires_grad else Category.FROZEN
    return Category.CACHE


def track(
    fn: Callable[[], Any],
    *registered: Trackable,
    devices: Mapping[str, str] | None = None,
    granularity: Mapping[str, int] | None = None,
) -> MemoryReport:
    """Run `fn()` once under a new `MemoryTracker` with `registered` registered; its report."""
    tracker = MemoryTracker(devices=devices, granularity=granularity)
    tracker.register(*registered)
    with tracker:
        fn()
    return tracker.report()
