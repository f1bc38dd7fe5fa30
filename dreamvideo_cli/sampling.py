"""Sampling a video from the frozen backbone with whatever adapters are attached: the part of
composition (paper Sec. 3.4) that learning's previews, `dv compose` and `dv bench` share.

Classifier-free guidance runs the conditional and unconditional branches as one batch:
pred = pred_u + g * (pred_c - pred_u). The unconditional branch gets the negative prompt
(empty by default) and, where a motion adapter is attached, the zero appearance embedding
its caller set for it, as in the authors' code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from dreamvideo_cli.backbone import Components
from dreamvideo_cli.events import EventHandler, StageFinished, StageStarted, StepDone, ignore_events
from dreamvideo_cli.experts import running_expert
from dreamvideo_cli.memory.placement import use
from dreamvideo_cli.runtime import autocast, encode_text, tokenize
from dreamvideo_cli.samplers import Sampler


@dataclass(frozen=True)
class VideoRequest:
    """What to sample: the prompt pair, the video's size and the sampler's settings."""

    prompt: str
    frames: int
    height: int
    width: int
    steps: int
    guidance: float
    sampler: Sampler
    seed: int
    negative_prompt: str = ""
    eta: float = 0.0
    # Guidance on a named expert's steps where it differs from `guidance` (SamplingDefaults).
    expert_guidance: tuple[tuple[str, float], ...] = ()


def initial_noise(parts: Components, frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """The starting latents [1, C, F', h, w], drawn on the CPU so a seed gives the same video
    on any device."""
    h, w = parts.codec.latent_size(height, width)
    cpu = torch.Generator("cpu").manual_seed(seed)
    shape = (1, parts.codec.channels, parts.codec.latent_frames(frames), h, w)
    return torch.randn(shape, generator=cpu).to(parts.device)


@torch.no_grad()
def sample_latents(
    parts: Components,
    context: torch.Tensor,
    latents: torch.Tensor,
    steps: int,
    guidance: float,
    sampler: Sampler,
    eta: float = 0.0,
    on_event: EventHandler = ignore_events,
    expert_guidance: tuple[tuple[str, float], ...] = (),
) -> torch.Tensor:
    """Classifier-free guidance with both branches as one batch, from `latents` [1, C, F', h, w]
    (unit noise) with `context` [2, T, D] (the prompt, then the negative prompt).
    Returns the final latents [1, C, F', h, w]. On a backbone with experts, each step's
    guidance is its expert's from `expert_guidance` where set (WanPipeline's guidance_scale_2)."""
    device = parts.device
    scheduler = sampler.make_scheduler(parts.objective)
    scheduler.set_timesteps(steps, device=device)
    # Flow-matching schedulers start from unit noise and scale no inputs.
    latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)
    scale_input = getattr(scheduler, "scale_model_input", lambda x, t: x)
    step_kwargs = {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}
    per_expert = "".join(f", {name} {g}" for name, g in expert_guidance)  # e.g. ", low 3.0"
    on_event(StageStarted("sampling", len(scheduler.timesteps), f"{sampler.name}, guidance {guidance}{per_expert}"))
    experts, guidance_of = parts.family.experts(), dict(expert_guidance)
    for i, t in enumerate(scheduler.timesteps):
        # Staged parts: the denoiser on the GPU (after block swap, where applied, took its
        # blocks to the host), of several experts the one this step runs, at its guidance.
        expert = running_expert(experts, t)
        use(parts, "denoiser", experts=(expert,) if expert is not None else ())
        g = guidance_of.get(expert.name, guidance) if expert is not None else guidance
        x = scale_input(torch.cat([latents, latents]), t)  # [2, C, F', h, w]
        with autocast(device):
            pred = parts.denoise(x.to(parts.dtype), t.expand(2), context).float()
        pred_c, pred_u = pred.chunk(2)
        pred = pred_u + g * (pred_c - pred_u)
        latents = scheduler.step(pred, t, latents, **step_kwargs).prev_sample
        on_event(StepDone("sampling", i + 1, len(scheduler.timesteps)))
    on_event(StageFinished("sampling"))
    return latents


@torch.no_grad()
def sample_video(
    parts: Components,
    request: VideoRequest,
    *,
    on_event: EventHandler = ignore_events,
    release_text: bool = True,
) -> np.ndarray:
    """Sample and decode one video; returns uint8 [F, H, W, 3]. `release_text=False` keeps
    an offloadable text encoder where it is (a preview in the middle of textual inversion,
    which needs it again at the next step)."""
    with autocast(parts.device):
        context = encode_text(parts, tokenize(parts, [request.prompt, request.negative_prompt]))  # [2, T, D]
    if release_text:
        parts.text.release()
    latents = initial_noise(parts, request.frames, request.height, request.width, request.seed)
    latents = sample_latents(
        parts,
        context.to(parts.dtype),
        latents,
        request.steps,
        request.guidance,
        request.sampler,
        request.eta,
        on_event,
        request.expert_guidance,
    )
    use(parts, "codec")  # the denoiser waits on the host while the VAE decodes
    on_event(StageStarted("decoding", 1, "VAE decode", unit=""))
    video = parts.codec.decode_video(latents[0])
    on_event(StageFinished("decoding"))
    return video
