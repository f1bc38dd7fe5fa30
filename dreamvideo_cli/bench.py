"""`dv bench`: the engine's training steps and sampling against plain eager diffusers,
on the same inputs, in one run.

"eager" is what a straightforward diffusers script (and the authors' code) does each
step: encode the images or frames with the VAE, the caption with the text encoder and
the guide frame with CLIP, then run the UNet; sampling runs the conditional and
unconditional branches as two UNet calls. "dv" is the engine's path: frozen work done
once and cached, both guidance branches in one batch, bf16 on a GPU.
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import Backbone, Components
from dreamvideo_cli.distributed import DistributedContext
from dreamvideo_cli.events import EventHandler, Note, ignore_events
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.learn.motion import MotionConfig, motion_loss
from dreamvideo_cli.learn.motion_data import MotionClips
from dreamvideo_cli.learn.run_folder import Run
from dreamvideo_cli.learn.subject import SubjectConfig, SubjectPhotos, identity_loss
from dreamvideo_cli.learn.trainer import Trainer
from dreamvideo_cli.plugins import get_backbone, get_sampler
from dreamvideo_cli.runtime import (
    autocast,
    encode_appearance,
    encode_text,
    frozen_dtype,
    pick_device,
    prepare_denoiser,
    quiet_libraries,
    tokenize,
)
from dreamvideo_cli.sampling import initial_noise, sample_latents

# Dense bf16 matrix throughput people can actually reach, by GPU name (docs/benchmarks.md).
PEAK_TFLOPS = {"H100": 790.0, "H200": 790.0, "A100": 312.0}


@dataclass
class BenchResult:
    name: str
    path: str  # "eager" or "dv"
    seconds_per_call: float  # one training step, or one whole video for compose
    seconds_per_step: float  # per training step, or per sampling step for compose
    peak_memory_gib: float | None
    tflop_per_step: float | None
    achieved_tflops: float | None
    fraction_of_peak: float | None
    processes: int = 1  # "dv, N processes": one data-parallel step over N processes
    samples_per_second: float | None = None  # training steps: the global batch over the step's time


@dataclass
class BenchConfig:
    backbone: str = "modelscope"
    backbone_path: str | None = None
    random_weights: bool = False
    frames: int | None = None  # None: the backbone's
    images: int = 4
    sample_steps: int = 50
    guidance: float | None = None  # None: the backbone's
    warmup: int = 2
    repeats: int = 5
    gradient_checkpointing: bool = False
    compile: bool = False  # the dv path's denoiser behind torch.compile (speed.compiled_denoiser)
    device: str = "auto"
    only: tuple[str, ...] = ("subject", "motion", "compose")


def _peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count_flops(fn: Callable[[], Any]) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e12
    except Exception:  # flop counting is a nicety; a missing formula must not fail the bench
        return None


def _measure(
    name: str,
    path: str,
    fn: Callable[[], Any],
    config: BenchConfig,
    device: torch.device,
    on_event: EventHandler,
    steps_per_call: int = 1,
) -> BenchResult:
    for _ in range(config.warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(config.repeats):
        fn()
    _sync(device)
    seconds = (time.perf_counter() - start) / config.repeats
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / 2**30
    else:  # the process's peak resident set, an upper bound for this measurement
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    flops = _count_flops(fn)
    achieved = flops / seconds if flops is not None else None
    peak = _peak_tflops(device)
    per_step = seconds / steps_per_call
    flops_per_step = flops / steps_per_call if flops is not None else None
    result = BenchResult(
        name, path, seconds, per_step, memory, flops_per_step, achieved, achieved / peak if achieved and peak else None
    )
    on_event(Note(f"{name} ({path}): {per_step * 1000:.1f} ms/step"))
    return result


def run_bench(config: BenchConfig, on_event: EventHandler = ignore_events) -> dict[str, Any]:
    """Measure each stage both ways; returns results and speed-ups as plain data."""
    quiet_libraries()
    if config.compile:  # compilation, then CUDA-graph recording, happen in the first calls
        config = replace(config, warmup=max(config.warmup, 3))
    ctx = DistributedContext.from_environment(pick_device(config.device))  # under a launcher: N processes
    device = ctx.device
    if not ctx.is_main:
        on_event = ignore_events
    backbone = get_backbone(config.backbone)(path=config.backbone_path, random_weights=config.random_weights)
    fmt = backbone.video_format
    frames = config.frames or fmt.frames
    on_event(Note(f"loading {backbone.fingerprint().describe()} on {device}"))
    backbone.check_frames(frames)
    parts = backbone.load(device, frozen_dtype(device))
    prepare_denoiser(parts)
    results: list[BenchResult] = []

    with tempfile.TemporaryDirectory(prefix="dv-bench-") as scratch:  # the trainers' run folders
        if "subject" in config.only:
            results += _bench_subject(backbone, parts, config, Path(scratch), ctx, on_event)
        if "motion" in config.only:
            results += _bench_motion(backbone, parts, frames, config, Path(scratch), ctx, on_event)

    if "compose" in config.only:
        guidance = backbone.sampling.guidance if config.guidance is None else config.guidance
        results.extend(
            _bench_compose(
                parts, backbone.sampling.sampler, frames, fmt.height, fmt.width, guidance, config, device, on_event
            )
        )

    speedups = {}
    for name in dict.fromkeys(r.name for r in results):
        eager = next(r for r in results if r.name == name and r.path == "eager")
        fast = next(r for r in results if r.name == name and r.path == "dv")
        speedups[name] = eager.seconds_per_step / fast.seconds_per_step
    # Scaling efficiency: samples per second over N processes against N times one process's.
    scaling = {
        r.name: r.samples_per_second / (r.processes * one.samples_per_second)
        for r in results
        if r.processes > 1 and r.samples_per_second
        for one in results
        if one.name == r.name and one.path == "dv" and one.samples_per_second
    }
    ctx.close(together=True)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "backbone": backbone.fingerprint().as_dict(),
        "frames": frames,
        "config": asdict(config),
        "results": [asdict(r) for r in results],
        "speedup": speedups,
        "processes": ctx.world_size,
        "scaling": scaling,
        "torch": torch.__version__,
    }


def _trainer(
    kind: str,
    settings: SubjectConfig | MotionConfig,
    backbone: Backbone,
    parts: Components,
    scratch: Path,
    ctx: DistributedContext | None = None,
) -> Trainer:
    """A trainer on a throwaway run folder: the step `dv subject learn` / `dv motion learn` take
    (over the launched processes with `ctx`)."""
    run = Run.create(scratch, kind, "bench", settings, scratch)
    return Trainer(run, backbone, parts, settings, ignore_events, resumed=False, ctx=ctx)


def _per_sample(result: BenchResult, samples: int, processes: int = 1) -> BenchResult:
    return replace(result, processes=processes, samples_per_second=samples * processes / result.seconds_per_step)


def _data_parallel(
    name: str,
    trainer: Trainer,
    params: Sequence[torch.Tensor],
    loss: Callable[[], torch.Tensor],
    batch: int,
    config: BenchConfig,
    on_event: EventHandler,
) -> list[BenchResult]:
    """The same step over the launched processes (gradients averaged, each its rows of the
    global batch); nothing when dv runs as one process."""
    if not trainer.ctx.is_distributed:
        return []
    optimizer = trainer.optimizer(params, 1e-5)
    with trainer.session():
        step = partial(trainer.step_once, params, optimizer, loss)
        path = f"dv, {trainer.ctx.world_size} processes"
        result = _measure(name, path, step, config, trainer.ctx.device, on_event)
    return [_per_sample(result, batch, trainer.ctx.world_size)]


def _bench_subject(
    backbone: Backbone,
    parts: Components,
    config: BenchConfig,
    scratch: Path,
    ctx: DistributedContext,
    on_event: EventHandler,
) -> list[BenchResult]:
    """eager: each step encodes the photos and the caption, then runs the denoiser; dv: the
    trainer's identity-adapter step on latents and a context encoded once."""
    device, fmt = parts.device, backbone.video_format
    images = torch.rand((config.images, 3, fmt.height, fmt.width), generator=_generator(device), device=device)
    settings = SubjectConfig(backbone=backbone.name, compile=config.compile, seed=0)
    trainer = _trainer("subject", settings, backbone, parts, scratch)
    shared = _trainer("subject", settings, backbone, parts, scratch, ctx)  # before attaching: it reads the sites
    identity = AdapterSet.for_backbone("identity", trainer.sites, None, backbone.adapter_design).to(device)
    identity.attach(parts.denoiser)
    params = list(identity.parameters())
    optimizer = trainer.optimizer(params, settings.lr_adapter)
    ids = tokenize(parts, ["a photo of a dog"] * config.images)
    data = SubjectPhotos(np.zeros(0), parts.codec.encode_images(images), None)  # [N, C, 1, h, w]
    with torch.no_grad(), autocast(device):
        context = encode_text(parts, ids[:1]).float()  # [1, T, D]

    def eager_loss() -> torch.Tensor:
        with torch.no_grad(), autocast(device):
            x0, ctx = parts.codec.encode_images(images), encode_text(parts, ids)
        with autocast(device):
            return diffusion_loss(parts, x0, ctx, trainer.streams.torch, settings.offset_noise)

    fast_loss = identity_loss(trainer, data, context, config.images)
    eager_step = partial(trainer.step_once, params, optimizer, eager_loss)
    results = [_per_sample(_measure("subject step", "eager", eager_step, config, device, on_event), config.images)]
    with trainer.session():
        step = partial(trainer.step_once, params, optimizer, fast_loss)
        results.append(_per_sample(_measure("subject step", "dv", step, config, device, on_event), config.images))
    loss = identity_loss(shared, data, context, config.images)
    results += _data_parallel("subject step", shared, params, loss, config.images, config, on_event)
    identity.detach()
    return results


def _bench_motion(
    backbone: Backbone,
    parts: Components,
    frames: int,
    config: BenchConfig,
    scratch: Path,
    ctx: DistributedContext,
    on_event: EventHandler,
) -> list[BenchResult]:
    """eager: each step encodes the clip, the caption and the guide frame; dv: the trainer's
    motion-adapter step on the clip as `dv motion learn` encodes it (written to an mp4 first)."""
    device, fmt = parts.device, backbone.video_format
    clip = torch.rand((frames, 3, fmt.height, fmt.width), generator=_generator(device), device=device)
    settings = MotionConfig(
        backbone=backbone.name, frames=frames, fps=fmt.fps, compile=config.compile, seed=0,
        gradient_checkpointing=config.gradient_checkpointing,
    )  # fmt: skip
    trainer = _trainer("motion", settings, backbone, parts, scratch)
    shared = _trainer("motion", settings, backbone, parts, scratch, ctx)  # before attaching: it reads the sites
    motion = AdapterSet.for_backbone("motion", trainer.sites, parts.appearance_dim, backbone.adapter_design)
    motion.to(device).attach(parts.denoiser)
    params = list(motion.parameters())
    optimizer = trainer.optimizer(params, settings.lr)
    ids = tokenize(parts, ["a bear walking"])

    def eager_loss() -> torch.Tensor:
        with torch.no_grad(), autocast(device):
            x0 = parts.codec.encode_video(clip).unsqueeze(0)  # [1, C, F', h, w]
            motion.set_appearance(encode_appearance(parts, clip[:1]))
            ctx = encode_text(parts, ids)
        with autocast(device):
            return diffusion_loss(parts, x0, ctx, trainer.streams.torch, settings.offset_noise)

    video = scratch / "clip.mp4"
    media.write_video(video, (clip.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy(), fmt.fps, {})
    data = MotionClips.encode(
        parts, fmt, [media.probe_clip(video)], ["a bear walking"], frames, fmt.fps, ignore_events, backbone.name
    )
    eager_step = partial(trainer.step_once, params, optimizer, eager_loss)
    results = [_per_sample(_measure("motion step", "eager", eager_step, config, device, on_event), 1)]
    with trainer.session():
        step = partial(trainer.step_once, params, optimizer, motion_loss(trainer, motion, data, settings))
        results.append(_per_sample(_measure("motion step", "dv", step, config, device, on_event), 1))
    loss = motion_loss(shared, motion, data, settings)
    results += _data_parallel("motion step", shared, params, loss, 1, config, on_event)
    motion.detach()
    return results


def _generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(0)


def _bench_compose(
    parts: Components,
    sampler_name: str,
    frames: int,
    height: int,
    width: int,
    guidance: float,
    config: BenchConfig,
    device: torch.device,
    on_event: EventHandler,
) -> list[BenchResult]:
    sampler = get_sampler(sampler_name)  # the backbone's own (ModelScope: DDIM)
    latents0 = initial_noise(parts, frames, height, width, seed=0)
    ids = tokenize(parts, ["a dog walking in the snow", ""])

    @torch.no_grad()
    def sample(batched: bool) -> None:
        with autocast(device):
            context = encode_text(parts, ids).to(parts.dtype)
        if batched:  # dv: compose's own sampling loop, both guidance branches in one batch
            sample_latents(parts, context, latents0, config.sample_steps, guidance, sampler)
            return
        # eager: what a plain diffusers script does, one call per guidance branch
        scheduler = sampler.make_scheduler(parts.objective)
        scheduler.set_timesteps(config.sample_steps, device=device)
        latents = latents0 * getattr(scheduler, "init_noise_sigma", 1.0)
        with autocast(device):
            for t in scheduler.timesteps:
                pred_c = parts.denoise(latents.to(parts.dtype), t.expand(1), context[:1]).float()
                pred_u = parts.denoise(latents.to(parts.dtype), t.expand(1), context[1:]).float()
                latents = scheduler.step(pred_u + guidance * (pred_c - pred_u), t, latents).prev_sample

    measured = []
    for path, batched in (("eager", False), ("dv", True)):
        once = BenchConfig(**{**asdict(config), "warmup": 1, "repeats": 1})
        result = _measure("compose", path, partial(sample, batched), once, device, on_event, config.sample_steps)
        measured.append(result)
    return measured
