"""Each stage run once by the engine's own code in the planning world (plan/world.py), split
into phases, each phase's peaks taken by the tracker.

- subject: the photos encoded (`SubjectPhotos.encode`), the placeholder token added, then
  `textual_inversion` and `train_identity_adapter` themselves, each for one step;
- motion: a short clip written to a scratch folder and encoded by `MotionClips.encode`
  (decoded, resized to the backbone's size, VAE-encoded window by window, appearance and
  caption embeddings), then `train_motion_adapter` for one step;
- compose: both adapters and the placeholder token attached, the appearance guide
  encoded, then `sample_video` with one sampling step (classifier-free guidance as one
  batch of 2) and the VAE decode.

Every stage starts with "load" (the frozen parts where loading leaves them: on the host for a
GPU, `memory.placement`; then `--fp8`'s conversion). The engine's own calls place each part on
the GPU while it works; "place denoiser" is the trainer's session: block swap and activation
offload applied (`memory.levers`), then the denoiser brought to the GPU. The trainer
is the engine's, with `train` cut to one step and nothing written (`_PlanningTrainer`): the
step runs with AdamW's state made beforehand, as every step after the first does. Phases start
where the engine reports a stage starting (`StageStarted`) or where a stage here marks one,
and run until the next: each phase's peak is its own. Steps also count the bytes they copy
between host and GPU and their floating-point operations (`Transfer`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet, add_placeholder_token
from dreamvideo_cli.backbone import AdapterSite, Backbone, Components
from dreamvideo_cli.events import Event, StageStarted
from dreamvideo_cli.learn.motion import MotionConfig, train_motion_adapter
from dreamvideo_cli.learn.motion_data import MotionClips
from dreamvideo_cli.learn.optim import AdamWWithWarmup
from dreamvideo_cli.learn.run_folder import Run
from dreamvideo_cli.learn.subject import SubjectConfig, SubjectPhotos, textual_inversion, train_identity_adapter
from dreamvideo_cli.learn.trainer import Trainer
from dreamvideo_cli.memory import Category, DevicePeak
from dreamvideo_cli.memory.levers import AppliedLevers, MemoryLevers, apply_levers, store_fp8
from dreamvideo_cli.memory.placement import use
from dreamvideo_cli.plan.model import PhasePlan, Split, Transfer
from dreamvideo_cli.plan.world import GPU, HOST, PlanningWorld, real_scheduling
from dreamvideo_cli.plugins import get_sampler
from dreamvideo_cli.run_layout import Stage
from dreamvideo_cli.runtime import encode_appearance, to_tensor_images, tokenize
from dreamvideo_cli.sampling import VideoRequest, sample_video

__all__ = ["PHOTOS", "STEPS", "Phases", "StageInputs", "StageRun", "run_compose", "run_motion", "run_subject"]

PHOTOS = 5  # photos a subject is learnt from: the upper end of the paper's 3-5
STEPS = 1  # training steps run per training phase, after AdamW's state is made
TOKEN, INIT_WORD, PHRASE = "<plan>", "dog", "a bear walking"
# Phase names for the stages the engine reports.
_PHASE_NAMES = {
    Stage.ENCODING: "encode clips",
    Stage.EMBEDDING: "textual inversion",
    Stage.IDENTITY: "identity adapter",
    Stage.MOTION: "motion adapter",
    "sampling": "sampling step",
    "decoding": "decode",
}
_aten = torch.ops.aten


@dataclass(frozen=True)
class StageInputs:
    """What a stage is planned for."""

    frames: int
    batch_size: int
    fps: int
    gradient_checkpointing: bool
    levers: MemoryLevers = field(default_factory=MemoryLevers)


class _StepCounter(TorchDispatchMode):
    """Bytes copied between the GPU stand-in and the host stand-in (`_to_copy`, `copy_`) and
    floating-point operations (torch's own formulas, `flop_counter.flop_registry`; its
    `FlopCounterMode` is not used: its module hooks keep checkpointed recomputations alive).
    A part placed on the GPU (`PlanningWorld.move`) is a copy once per phase, not per step: left out."""

    def __init__(self, world: PlanningWorld) -> None:
        super().__init__()
        self.world = world
        self.host_to_gpu = 0
        self.gpu_to_host = 0
        self.flops = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        if func is _aten._to_copy.default:
            src, dst = args[0], out
        elif func is _aten.copy_.default:
            dst, src = args[0], args[1]
        else:
            return out
        if self.world.moving:
            return out
        if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and src.device != dst.device:
            nbytes = dst.numel() * dst.element_size()
            if dst.device.type == GPU.type and src.device.type == HOST.type:
                self.host_to_gpu += nbytes
            elif dst.device.type == HOST.type and src.device.type == GPU.type:
                self.gpu_to_host += nbytes
        return out


class Phases:
    """Splits a stage's run into phases (`start`, or the engine's `StageStarted` events
    through `on_event`); each phase's peaks are its own (the tracker's peak is reset at its
    start). `steps()` counts what one step copies and computes."""

    def __init__(self, world: PlanningWorld) -> None:
        self.world = world
        self.done: list[PhasePlan] = []
        self.listeners: list[Callable[[str], None]] = []  # told each phase's name as it starts
        self._name: str | None = None
        self._counter: _StepCounter | None = None
        self._steps = 0  # steps counted so far in this phase
        self._whole = False  # the whole phase is counted as one step (sampling)

    def on_event(self, event: Event) -> None:
        if isinstance(event, StageStarted):
            self.start(_PHASE_NAMES.get(event.stage, str(event.stage)))
            if event.stage == "sampling":  # the phase is the sampling loop itself
                self._count_from_here()

    def start(self, name: str) -> None:
        """End the phase in progress and start `name` (the same name again: nothing)."""
        if name == self._name:
            return
        self.finish()
        self.world.reregister()  # weights moved or converted, what trains changed
        self.world.tracker.reset_peak()
        self._name = name
        for listener in self.listeners:
            listener(name)

    @contextmanager
    def step(self) -> Iterator[None]:
        """One training step, whose copies and operations are counted."""
        counter = self._counter or _StepCounter(self.world)
        self._counter = counter
        with counter:
            yield
        self._steps += 1

    def _count_from_here(self) -> None:
        self._counter = _StepCounter(self.world)
        self._counter.__enter__()
        self._whole, self._steps = True, 1

    def finish(self) -> None:
        if self._name is None:
            return
        transfer = None
        if self._counter is not None:
            if self._whole:
                self._counter.__exit__(None, None, None)
            c, steps = self._counter, max(1, self._steps)
            transfer = Transfer(c.host_to_gpu // steps, c.gpu_to_host // steps, c.flops / steps)
        report = self.world.tracker.report()
        gpu, host = report.devices.get("cuda"), report.devices.get("cpu")
        where = ""
        if gpu is not None and gpu.moment is not None:
            m = gpu.moment
            where = f"{m.phase} at {m.op}" + (f" ({m.where})" if m.where else "")
        start = gpu.start if gpu is not None else 0
        self.done.append(PhasePlan(self._name, _split(gpu), _split(host), where, start, transfer))
        self._name, self._counter, self._steps, self._whole = None, None, 0, False


def _split(peak: DevicePeak | None) -> Split:
    if peak is None:
        return Split()
    at = peak.at_peak
    return Split(
        weights=at.get(Category.FROZEN, 0),
        trainable=at.get(Category.TRAINABLE, 0) + at.get(Category.GRADIENT, 0) + at.get(Category.OPTIMIZER, 0),
        activations=at.get(Category.ACTIVATION, 0),
        cache=at.get(Category.CACHE, 0),
        peak=peak.peak,
    )


class _PlanningTrainer(Trainer):
    """The engine's trainer with its step loop cut to one `step_once` and nothing written:
    no losses read back, no checkpoints, no state."""

    phases: Phases

    def train(
        self,
        stage: Stage,
        total: int,
        params: Sequence[torch.Tensor],
        lr: float,
        loss_fn: Callable[[], torch.Tensor],
        *,
        describe: str,
        checkpoint: AdapterSet | None = None,
        preview: Callable[[int], None] | None = None,
    ) -> None:
        optimizer = self.optimizer(params, lr)
        # AdamW's state as the first step leaves it, made without that step's forward and
        # backward passes (zero gradients, one update): the planned step holds it, as every
        # step after the first does, at half the planning time of two steps.
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.update()
        self.on_event(StageStarted(stage, STEPS, describe))
        with self.phases.step():
            self.step_once(params, optimizer, loss_fn)

    def optimizer(self, params: Sequence[torch.Tensor], lr: float) -> AdamWWithWarmup:
        optimizer = super().optimizer(params, lr)
        # On CUDA tensors AdamW defaults to its foreach implementation, whose list
        # temporaries (e.g. every exp_avg_sq's square root at once) a CPU's per-tensor
        # loop does not make.
        if self.phases.world.on_gpu:
            for group in optimizer.optimizer.param_groups:
                group["foreach"] = True
        return optimizer


@dataclass
class StageRun:
    """One stage being planned: the world, the backbone and its parts, what is asked."""

    world: PlanningWorld
    backbone: Backbone
    parts: Components
    inputs: StageInputs
    phases: Phases

    def load(self) -> None:
        """The "load" phase: the parts where loading left them, then fp8's conversion
        (`store_fp8`: right after loading, before adapters)."""
        self.phases.start("load")
        if self.inputs.levers.fp8:
            store_fp8(self.parts)

    def trainer(self, kind: str, config: SubjectConfig | MotionConfig, scratch: Path) -> _PlanningTrainer:
        run = Run.create(scratch, kind, "plan", config, scratch)
        trainer = _PlanningTrainer(run, self.backbone, self.parts, config, self.phases.on_event, resumed=False)
        trainer.phases = self.phases
        return trainer

    def adapters(self, kind: str, sites: list[AdapterSite]) -> AdapterSet:
        """New adapters on the GPU stand-in, counted as trainable."""
        condition = self.parts.appearance_dim if kind == "motion" else None
        with torch.device(GPU):
            adapters = AdapterSet.for_backbone(kind, sites, condition, self.backbone.adapter_design)  # type: ignore[arg-type]
        self.world.register(adapters)
        return adapters

    def cache(self, *tensors: torch.Tensor | None) -> None:
        """Tensors kept for the whole run (cached latents, embeddings) count as data."""
        self.world.tracker.register(*(t for t in tensors if t is not None), category=Category.CACHE)

    def apply_levers(self, stack: ExitStack) -> None:
        """Block swap and activation offload applied until `stack` closes, as `compose` applies
        them around sampling, with the host stand-in as the host."""
        levers = self.inputs.levers
        if levers.blocks_to_swap or levers.offload_activations:
            self.count_swapped(stack.enter_context(apply_levers(self.parts, levers, host=HOST)))

    def count_swapped(self, applied: AppliedLevers | None) -> None:
        """Block swap's host buffers are the swapped blocks' weights: they count as frozen."""
        if applied is not None and applied.swap is not None:
            self.world.tracker.register(*applied.swap.host_buffers(), category=Category.FROZEN)

    def settings(self) -> dict[str, Any]:
        """The learn config's fields that ask for the levers the trainer's session applies
        (fp8 is stored by `load`, as `Trainer.start` stores it)."""
        levers = self.inputs.levers
        return {
            "gradient_checkpointing": self.inputs.gradient_checkpointing,
            "blocks_to_swap": levers.blocks_to_swap,
            "offload_activations": levers.offload_activations,
        }


def run_subject(run: StageRun) -> None:
    """What `learn_subject` runs between loading and publishing."""
    world, parts, inputs, phases = run.world, run.parts, run.inputs, run.phases
    fmt = run.backbone.video_format
    run.load()
    with tempfile.TemporaryDirectory(prefix="dv-plan-") as scratch:
        config = SubjectConfig(
            backbone=run.backbone.name, batch_size=inputs.batch_size, seed=0, embedding_steps=STEPS,
            adapter_steps=STEPS, **run.settings(),
        )  # fmt: skip
        trainer = run.trainer("subject", config, Path(scratch))
        phases.start("encode photos")
        photos = [Image.new("RGB", (fmt.width, fmt.height)) for _ in range(PHOTOS)]
        data = SubjectPhotos.encode(parts, fmt, photos, None)  # latents [N, C, 1, h, w]
        run.cache(data.latents)
        placeholder = add_placeholder_token(parts.tokenizer, parts.text_encoder, TOKEN, INIT_WORD)
        world.register(placeholder)
        ids = tokenize(parts, [f"a {TOKEN}"])  # [1, T]
        phases.start("place denoiser")
        identity = run.adapters("identity", trainer.sites)
        with trainer.session():
            run.count_swapped(trainer.applied)
            textual_inversion(trainer, placeholder, ids, data, config, f"a {TOKEN}", f"{TOKEN} from {INIT_WORD!r}")
            train_identity_adapter(trainer, identity, placeholder, ids, data, config, f"a {TOKEN}")
        phases.finish()


def _write_clip(folder: Path, frames: int, fps: int) -> Path:
    """A short clip of `frames` frames at `fps`, small: the engine resizes every frame to the
    backbone's size, as it does for any clip."""
    pixels = np.zeros((frames, 64, 64, 3), dtype=np.uint8)
    return media.write_video(folder / "clip.mp4", pixels, fps, {})


def run_motion(run: StageRun) -> None:
    """What `learn_motion` runs between loading and publishing, on one clip of one window."""
    parts, inputs, phases = run.parts, run.inputs, run.phases
    run.load()
    with tempfile.TemporaryDirectory(prefix="dv-plan-") as scratch:
        config = MotionConfig(
            backbone=run.backbone.name, frames=inputs.frames, fps=inputs.fps, batch_size=inputs.batch_size,
            steps=STEPS, seed=0, **run.settings(),
        )  # fmt: skip
        trainer = run.trainer("motion", config, Path(scratch))
        info = media.probe_clip(_write_clip(Path(scratch), inputs.frames, inputs.fps))
        phases.start(_PHASE_NAMES[Stage.ENCODING])
        data = MotionClips.encode(
            parts, run.backbone.video_format, [info], [PHRASE], inputs.frames, inputs.fps, phases.on_event,
            run.backbone.name,
        )  # fmt: skip
        for clip in data.clips:
            run.cache(clip.latents, clip.appearance)
        run.cache(data.contexts)
        phases.start("place denoiser")
        motion = run.adapters("motion", trainer.sites)
        motion.set_strength(config.appearance_strength)
        motion.attach(parts.denoiser)
        with trainer.session():
            run.count_swapped(trainer.applied)
            train_motion_adapter(trainer, motion, data, config, PHRASE)
        phases.finish()


def run_compose(run: StageRun) -> None:
    """What `compose` runs for a subject and a motion: both adapters attached, the guide
    image's appearance embedding, then `sample_video` with one sampling step and the decode,
    block swap around it as `composition.compose` applies it. On a GPU the engine's own
    placement (`memory.placement.use`) brings the appearance encoder for the guide, the
    denoiser as sampling starts and the VAE as decoding does."""
    world, parts, inputs, phases = run.world, run.parts, run.inputs, run.phases
    fmt = run.backbone.video_format
    sites = run.backbone.adapter_sites(parts.denoiser)
    run.load()
    with ExitStack() as levers:
        phases.start("encode prompt")
        add_placeholder_token(parts.tokenizer, parts.text_encoder, TOKEN, INIT_WORD)
        for kind in ("identity", "motion"):
            adapters = run.adapters(kind, sites).requires_grad_(False)  # composed, not trained
            world.register(adapters)
            adapters.attach(parts.denoiser)
            if kind == "motion":
                guide_image = np.zeros((fmt.height, fmt.width, 3), dtype=np.uint8)
                use(parts, "appearance")
                guide = encode_appearance(parts, to_tensor_images([guide_image], parts.device))  # [1, C']
                adapters.set_appearance(torch.cat([guide, torch.zeros_like(guide)]))  # [2, C']: cond, uncond
        world.reregister()
        request = VideoRequest(
            prompt=f"a {TOKEN} walking", frames=inputs.frames, height=fmt.height, width=fmt.width, steps=1,
            guidance=run.backbone.sampling.guidance, seed=0,
            sampler=real_scheduling(get_sampler(run.backbone.sampling.sampler)),
        )  # fmt: skip
        run.apply_levers(levers)
        sample_video(parts, request, on_event=phases.on_event)
        phases.finish()
