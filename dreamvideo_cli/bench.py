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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import torch

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import Components
from dreamvideo_cli.events import EventHandler, Note, ignore_events
from dreamvideo_cli.learn.common import diffusion_loss, prepare_denoiser
from dreamvideo_cli.runtime import (
    autocast,
    encode_appearance,
    encode_text,
    frozen_dtype,
    pick_device,
    quiet_libraries,
    tokenize,
)
from dreamvideo_cli.speed import compiled_unet, gradient_checkpointing

# Dense bf16 matrix throughput people can actually reach, by GPU name (h100-baseline.md).
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
    compile: bool = False  # the dv path's UNet behind torch.compile (speed.compiled_unet)
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
    from dreamvideo_cli.plugins import get_backbone

    quiet_libraries()
    if config.compile:  # compilation, then CUDA-graph recording, happen in the first calls
        config = replace(config, warmup=max(config.warmup, 3))
    device = pick_device(config.device)
    backbone = get_backbone(config.backbone)(path=config.backbone_path, random_weights=config.random_weights)
    fmt = backbone.video_format
    frames = config.frames or fmt.frames
    on_event(Note(f"loading {backbone.fingerprint().describe()} on {device}"))
    backbone.check_frames(frames)
    parts = backbone.load(device, frozen_dtype(device))
    prepare_denoiser(parts)
    sites = backbone.adapter_sites(parts.denoiser)
    design = backbone.adapter_design
    fast_model = compiled_unet(parts.denoiser, config.compile, device)
    g = torch.Generator(device).manual_seed(0)
    results: list[BenchResult] = []

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=g, device=device)

    if "subject" in config.only:
        images = rand(config.images, 3, fmt.height, fmt.width)
        identity = AdapterSet.for_backbone("identity", sites, None, design).to(device).attach(parts.denoiser)
        optimizer = torch.optim.AdamW(identity.parameters(), lr=1e-5)
        ids = tokenize(parts, ["a photo of a dog"] * config.images)
        latents = parts.codec.encode_images(images)  # [N, C, 1, h, w]
        with torch.no_grad(), autocast(device):
            context = encode_text(parts, ids[:1]).float()

        def subject_step(cached: bool) -> None:
            with autocast(device):
                if cached:
                    x0, ctx = latents, context.expand(config.images, -1, -1).to(parts.dtype)
                else:
                    with torch.no_grad():
                        x0 = parts.codec.encode_images(images)
                        ctx = encode_text(parts, ids)
                loss = diffusion_loss(parts, x0, ctx, g, 0.1, model=fast_model if cached else parts.denoiser)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        results.append(_measure("subject step", "eager", lambda: subject_step(False), config, device, on_event))
        results.append(_measure("subject step", "dv", lambda: subject_step(True), config, device, on_event))
        identity.detach()

    if "motion" in config.only:
        clip = rand(frames, 3, fmt.height, fmt.width)
        motion = (
            AdapterSet.for_backbone("motion", sites, parts.appearance_dim, design).to(device).attach(parts.denoiser)
        )
        optimizer = torch.optim.AdamW(motion.parameters(), lr=1e-5)
        ids = tokenize(parts, ["a bear walking"])
        latents = parts.codec.encode_video(clip).unsqueeze(0)  # [1, C, F', h, w]
        guide = encode_appearance(parts, clip[:1])
        with torch.no_grad(), autocast(device):
            context = encode_text(parts, ids).to(parts.dtype)

        def motion_step(cached: bool) -> None:
            with autocast(device):
                if cached:
                    x0, ctx, e = latents, context, guide
                else:
                    with torch.no_grad():
                        x0 = parts.codec.encode_video(clip).unsqueeze(0)
                        e = encode_appearance(parts, clip[:1])
                        ctx = encode_text(parts, ids)
                motion.set_appearance(e)
                with gradient_checkpointing(parts.denoiser, cached and config.gradient_checkpointing, parts.family):
                    loss = diffusion_loss(parts, x0, ctx, g, 0.1, model=fast_model if cached else parts.denoiser)
                    loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        results.append(_measure("motion step", "eager", lambda: motion_step(False), config, device, on_event))
        results.append(_measure("motion step", "dv", lambda: motion_step(True), config, device, on_event))
        motion.detach()

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
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "backbone": backbone.fingerprint().as_dict(),
        "frames": frames,
        "config": asdict(config),
        "results": [asdict(r) for r in results],
        "speedup": speedups,
        "torch": torch.__version__,
    }


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
    from dreamvideo_cli.compose import initial_noise, sample_latents
    from dreamvideo_cli.plugins import get_sampler

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
