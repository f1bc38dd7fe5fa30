"""The planning world: a backbone's parts as fake tensors without weights, and the rules that
make the engine's own code run on them as it would on a GPU.

Fake "cpu" tensors stand for the GPU and fake "meta" tensors for host memory
(`memory.PLANNING_DEVICES`: fake CUDA cannot run a backward pass without a driver). What
differs between the engine on that stand-in and the engine on a real GPU, and what this
module does about it while a plan runs (`PlanningWorld.running`):

- `runtime.autocast(device)` is enabled only for CUDA devices; on the stand-in it is
  CUDA's autocast instead (`memory.gpu_autocast` under `memory.CudaRules`), swapped into
  every engine module that imported it, and put back afterwards;
- `speed.Checkpointed` recomputes without the function modes of the forward: the same
  `checkpoint` is given `context_fn=memory.checkpoint_contexts` while planning;
- `nn.Module.to` cannot move fake parameters (`torch.utils.swap_tensors` refuses any fake
  tensor: the fake mode memoises each one under a weak reference), so modules holding fake
  tensors are moved by replacing their parameters and buffers, as `memory.materialize` does,
  and re-registered with the tracker where they now live;
- a text encoder kept in host memory between uses on a GPU (`TextEncoding.offload`, Wan's
  UMT5) is released to the host stand-in, where the real one checks for a CPU device and
  would keep it on the "GPU";
- where the frozen parts live: on a GPU the engine loads them to the host and brings each to
  the GPU only while it works (`memory.placement`); here they are built on the host stand-in
  and `placement.use` moves them with the engine's own calls; on a CPU (`target="cpu"`) they
  are built where they compute, as the engine loads them there;
- `.numpy()` of a fake tensor (a decoded video leaving the GPU) is an uninitialised array
  of the same shape and dtype, and its bytes count as host memory;
- UNet3D's chunked temporal attention is set up as for CUDA (`DenoiserFamily.prepare`);
- a sampler's scheduler keeps its timesteps and noise levels as real tensors
  (`real_scheduling`): it reads them back in Python (`.item()`, `nonzero()`), which a fake
  tensor cannot answer.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.utils.checkpoint import checkpoint

from dreamvideo_cli import runtime
from dreamvideo_cli.backbone import Backbone, Components
from dreamvideo_cli.memory import PLANNING_DEVICES, Category, CudaRules, MemoryTracker, materialize
from dreamvideo_cli.memory.fake import checkpoint_contexts, gpu_autocast
from dreamvideo_cli.memory.placement import PART_NAMES, part_modules, staged
from dreamvideo_cli.objectives import Objective
from dreamvideo_cli.samplers import Sampler
from dreamvideo_cli.text import TextEncoding, Tokens

__all__ = [
    "GPU",
    "GPU_DTYPE",
    "HOST",
    "PlanningWorld",
    "Target",
    "frozen_modules",
    "move_module",
    "real_scheduling",
]

GPU = torch.device("cpu")  # fake "cpu" tensors stand for the GPU
HOST = torch.device("meta")  # fake "meta" tensors for host memory
GPU_DTYPE = torch.bfloat16  # `runtime.frozen_dtype` on a CUDA device
Target = Literal["cuda", "cpu"]  # the device the planned run computes on
_NUMPY_DTYPES: dict[torch.dtype, Any] = {
    torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32,
    torch.int64: np.int64, torch.bool: np.bool_, torch.float16: np.float16, torch.float32: np.float32,
    torch.float64: np.float64,
}  # fmt: skip
# Engine packages whose module globals may hold `runtime.autocast` or torch's `checkpoint`.
_ENGINE_PACKAGES = ("dreamvideo_cli", "dv_")
_ENGINE_AUTOCAST = runtime.autocast


def frozen_modules(parts: Components) -> list[nn.Module]:
    """Every module of a backbone's frozen parts: denoiser, text encoder, appearance
    encoder and whatever modules the codec holds (a VAE)."""
    modules = [m for name in PART_NAMES for m in part_modules(parts, name)]
    return [*modules, parts.text.model] if isinstance(parts.text.model, nn.Module) else modules


def move_module(
    module: nn.Module,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    on_moved: Callable[[torch.Tensor], None] | None = None,
) -> nn.Module:
    """`module.to(device, dtype)` for a module holding fake tensors: each parameter and
    buffer that changes is replaced by a moved copy (tied tensors stay tied; gradients move
    with their parameters), the rest are kept as they are; `on_moved(copy)` is called for
    each copy as it is made. In place; returns `module`."""
    made: dict[int, torch.Tensor] = {}

    def moved(t: torch.Tensor) -> torch.Tensor:
        new = made.get(id(t))
        if new is not None:
            return new
        # nn.Module.to casts floating-point tensors only
        target = dtype if dtype is not None and (t.is_floating_point() or t.is_complex()) else t.dtype
        with torch.no_grad():
            data = t.detach().to(device=device or t.device, dtype=target)
        if data.device == t.device and data.dtype == t.dtype:
            new = t
        elif isinstance(t, nn.Parameter):
            param = nn.Parameter(data, requires_grad=t.requires_grad)
            if t.grad is not None:
                param.grad = t.grad.to(device=data.device, dtype=data.dtype)
            new = param
        else:
            new = data
        if new is not t and on_moved is not None:
            on_moved(new)
        made[id(t)] = new
        return new

    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None:
                sub._parameters[name] = moved(param)  # type: ignore[assignment]
        for name, buffer in sub._buffers.items():
            if buffer is not None:
                sub._buffers[name] = moved(buffer)
    return module


def _holds_fake(module: nn.Module) -> bool:
    return any(isinstance(t, FakeTensor) for t in (*module.parameters(), *module.buffers()))


class _OffloadedText(TextEncoding):
    """A text encoding whose encoder lives on the host between uses, as the real one does on
    a GPU (`TextEncoding.encode`/`release` with `offload`): brought to the GPU stand-in to
    encode, released to the host stand-in. Everything else is the wrapped encoding's."""

    def __init__(self, inner: TextEncoding, world: PlanningWorld) -> None:
        super().__init__(inner.tokenizer, inner.model, inner.max_length, offload=True)
        self.inner, self.world = inner, world
        self.device = GPU

    def prepare(self, prompt: str) -> str:
        return self.inner.prepare(prompt)

    def tokenize(self, prompts: list[str], device: torch.device) -> Tokens:
        return self.inner.tokenize(prompts, device)

    def run(self, tokens: Tokens) -> torch.Tensor:
        return self.inner.run(tokens)

    def encode(self, tokens: Tokens) -> torch.Tensor:
        if self.offload:
            self.world.move(self.model, GPU)
        return self.run(tokens)

    def release(self) -> None:
        if self.offload:
            self.world.move(self.model, HOST)


class _GpuStandIn(CudaRules):
    """CUDA's autocast rules on the stand-in (`CudaRules`; `cuda_rules=False` for a CPU run),
    and `.numpy()` of a fake tensor as an uninitialised array counted as host memory."""

    def __init__(self, world: PlanningWorld, cuda_rules: bool = True) -> None:
        super().__init__()
        self.world = world
        self.cuda_rules = cuda_rules

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func is torch.Tensor.numpy and args and isinstance(args[0], FakeTensor):
            t: torch.Tensor = args[0]
            array = np.empty(tuple(t.shape), dtype=_NUMPY_DTYPES.get(t.dtype, np.float32))
            self.world.host_arrays += array.nbytes
            self.world.tracker.add_fixed("cpu", array.nbytes, Category.ACTIVATION)
            return array
        if not self.cuda_rules:
            return func(*args, **(kwargs or {}))
        return super().__torch_function__(func, types, args, kwargs)


class PlanningWorld:
    """A fake-tensor world for one plan: its `FakeTensorMode`, the tracker that counts the
    GPU stand-in and the host stand-in, and the backbone's parts built in it (`load`)."""

    def __init__(self, target: Target = "cuda") -> None:
        # Real tensors made by library code (a tokenizer's ids, a scheduler's timesteps, the
        # pixels of a decoded clip) enter the fake world as constants.
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        # A CPU run (`target="cpu"`, what the tests check against torch's profiler) is the
        # stand-in itself: no CUDA rules, float32 weights, no 512-byte rounding.
        self.target: Target = target
        self.on_gpu = target == "cuda"
        self.dtype = GPU_DTYPE if self.on_gpu else torch.float32  # `runtime.frozen_dtype`
        self.tracker = MemoryTracker(devices=PLANNING_DEVICES, granularity=None if self.on_gpu else {})
        self.modules: list[nn.Module] = []  # everything registered, re-registered after moves
        self.parts: Components | None = None
        self.host_arrays = 0  # bytes of numpy arrays handed out by `.numpy()`
        # Inside `move` (placing a part, once per phase): the per-step copies leave it out.
        self.moving = 0

    def load(self, backbone: Backbone) -> Components:
        """The backbone's parts as a run loads them (frozen, bf16 on a GPU): built on the meta
        device from the plugin's random-weights path (no weights read, nothing initialised)
        and given fake storage where `memory.placement.load_frozen_parts` leaves them: on the
        host stand-in, staged, for a GPU; on the stand-in itself for a CPU run."""
        parts = _meta_parts(backbone, self.dtype)
        with self.mode:
            for module in frozen_modules(parts):
                materialize(module, HOST if self.on_gpu else GPU)
        if self.on_gpu:
            parts = staged(replace(parts, device=HOST), GPU)
            parts = replace(parts, text=_OffloadedText(parts.text, self))
        else:  # on a CPU the engine's text offload is a no-op (`TextEncoding.release`)
            parts.text.device = GPU
            parts = replace(parts, device=GPU)
        parts.family.prepare(parts.denoiser, torch.device(self.target))  # as on that device (no CUDA call)
        self.register(*frozen_modules(parts))
        self.parts = parts
        return parts

    def register(self, *modules: nn.Module) -> None:
        """Count these modules' parameters and buffers where they live, by `requires_grad`;
        trainable parameters also as leaves, so their gradients count as gradients."""
        for module in modules:
            if all(m is not module for m in self.modules):
                self.modules.append(module)
            self.tracker.register(module)
            self.tracker.register(*(p for p in module.parameters() if p.requires_grad))

    def reregister(self) -> None:
        """Re-count every module registered so far (after the levers moved or converted
        weights, or a stage changed what trains)."""
        for module in self.modules:
            self.tracker.register(module)

    def move(self, module: nn.Module, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        """`move_module`, each copy counted as what it copies (a frozen weight stays one while
        the module moves) and the module re-registered where it now lives."""

        def count(t: torch.Tensor) -> None:
            self.tracker.register(t, category=Category.TRAINABLE if t.requires_grad else Category.FROZEN)

        self.moving += 1
        try:
            move_module(module, device, dtype, count)
        finally:
            self.moving -= 1
        self.register(module)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Inside: the fake mode, the tracker, CUDA's rules on the stand-in, and the engine's
        GPU-only behaviour swapped in (see the module docstring)."""
        original_to = nn.Module.to
        world = self

        def to(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
            if not _holds_fake(module):
                return original_to(module, *args, **kwargs)
            device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
            world.move(module, device, dtype)
            return module

        swaps: dict[Any, Any] = {}
        if self.on_gpu:
            swaps[runtime.autocast] = _planning_autocast
            swaps[checkpoint] = functools.partial(checkpoint, context_fn=checkpoint_contexts)
        with ExitStack() as stack:
            stack.enter_context(self.mode)
            stack.enter_context(self.tracker)
            stack.enter_context(_GpuStandIn(self, cuda_rules=self.on_gpu))
            stack.enter_context(_swapped_globals(swaps))
            nn.Module.to = to  # type: ignore[method-assign,assignment]
            stack.callback(setattr, nn.Module, "to", original_to)
            yield


_META_PARTS: dict[tuple[type[Backbone], str, torch.dtype], Components] = {}


def _meta_parts(backbone: Backbone, dtype: torch.dtype) -> Components:
    """A fresh copy of the backbone's parts on the meta device. Building them takes seconds
    for Wan 14B (a few thousand modules), copying them a tenth of a second: a search plans
    the same backbone many times."""
    key = (type(backbone), backbone.name, dtype)
    if key not in _META_PARTS:
        runtime.quiet_libraries()
        _META_PARTS[key] = backbone.load("meta", dtype)
    return copy.deepcopy(_META_PARTS[key])


def _planning_autocast(device: torch.device) -> Any:
    """`runtime.autocast` in a plan: the GPU stand-in runs under CUDA's autocast rules."""
    if device.type == GPU.type:
        return gpu_autocast()
    return _ENGINE_AUTOCAST(device)


@contextmanager
def _swapped_globals(swaps: dict[Any, Any]) -> Iterator[None]:
    """Replace, in every loaded engine module, each global bound to a key of `swaps` with
    its value (`from runtime import autocast` made a binding per module); put them back."""
    changed: list[tuple[Any, str, Any]] = []
    try:
        for name, module in list(sys.modules.items()):
            if module is None or not name.startswith(_ENGINE_PACKAGES) or name.startswith("dreamvideo_cli.plan"):
                continue
            for attr, value in list(vars(module).items()):
                try:
                    replacement = swaps.get(value)
                except TypeError:  # unhashable globals
                    continue
                if replacement is not None:
                    changed.append((module, attr, value))
                    setattr(module, attr, replacement)
        yield
    finally:
        for module, attr, value in reversed(changed):
            setattr(module, attr, value)


def real_scheduling(sampler: Sampler) -> Sampler:
    """`sampler` whose schedulers hold their timesteps and noise levels as real tensors (a few
    kilobytes) and run outside the fake mode: their own arithmetic is real (they read values
    back with `.item()` and `nonzero()`, which a fake tensor cannot answer), and whatever
    touches the fake latents is still fake (a fake tensor brings its mode along).

    The sampling loop iterates `scheduler.timesteps` under the fake mode, which makes each
    timestep fake: the scheduler's calls get the real one back, the i-th step's timestep
    being `timesteps[i]` (the loop steps through them in order, one `step` each)."""
    make: Callable[[Objective], Any] = sampler.make_scheduler

    def make_real(objective: Objective) -> Any:
        with unset_fake_temporarily():
            scheduler = make(objective)
        steps_taken = [0]

        def real_timestep(timestep: Any) -> Any:
            if isinstance(timestep, FakeTensor):
                return scheduler.timesteps[steps_taken[0]]
            return timestep

        set_timesteps, scale, step = scheduler.set_timesteps, scheduler.scale_model_input, scheduler.step

        def set_real_timesteps(*args: Any, **kwargs: Any) -> Any:
            with unset_fake_temporarily():
                steps_taken[0] = 0
                return set_timesteps(*args, **kwargs)

        def scale_real(sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
            with unset_fake_temporarily():
                return scale(sample, real_timestep(timestep), *args, **kwargs)

        def step_real(output: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
            with unset_fake_temporarily():
                result = step(output, real_timestep(timestep), *args, **kwargs)
            steps_taken[0] += 1
            return result

        scheduler.set_timesteps, scheduler.scale_model_input, scheduler.step = set_real_timesteps, scale_real, step_real
        return scheduler

    return replace(sampler, make_scheduler=make_real)
