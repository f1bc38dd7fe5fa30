"""What each of Wan 2.2 A14B's experts sees and decides, the measurements behind the
per-kind `--experts` defaults (docs/method.md, "Two experts"). On the CPU, in seconds:

    uv run python scripts/expert_split.py

1. The share of training timesteps in each expert's range, under the engine's own draw
   (`FlowMatchObjective`, logit-normal, shift 3.0).
2. The sampling steps each expert takes with wan2.2-a14b's sampler (UniPC, 40 steps) at the
   shipped shift 3.0 and at Wan's own 12.0.
3. On tiny-wan2.2-a14b (random weights): adapters of one kind with random, non-zero weights
   on one expert at a time; the change in the final latents of a 40-step sample from the same
   noise, split into its static part (the mean over latent frames: appearance, layout) and
   the rest (what differs between frames: motion), relative to the unadapted sample's.
   Random weights are not trained ones: this measures where in the trajectory a change
   lands, not what a trained adapter learns.
"""

from __future__ import annotations

from typing import Any

import torch

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.experts import expert_sites, in_ranges
from dreamvideo_cli.objectives import FlowMatchObjective
from dreamvideo_cli.samplers import UNIPC
from dreamvideo_cli.sampling import initial_noise, sample_latents
from dv_wan.backbones import TinyWan22A14BBackbone
from dv_wan.family import WAN22_A14B

STEPS = 40


def training_share() -> None:
    objective = FlowMatchObjective(shift=3.0)
    t = objective.model_timestep(
        objective.sample_timesteps(1_000_000, torch.Generator().manual_seed(0), torch.device("cpu"))
    )
    for expert in WAN22_A14B.experts():
        share = float(in_ranges(t, [expert]).float().mean())
        print(f"training draws in {expert.name} ({expert.describe_range()}): {share:.1%}")


def sampling_steps() -> None:
    for shift in (3.0, 12.0):
        scheduler = UNIPC.make_scheduler(FlowMatchObjective(shift=shift))
        scheduler.set_timesteps(STEPS)
        high = int((scheduler.timesteps >= WAN22_A14B.boundary).sum())
        print(f"shift {shift}: {high} of {STEPS} UniPC steps on the high-noise expert, {STEPS - high} on the low")


def _split(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    static = latents.mean(dim=2, keepdim=True)  # [1, C, 1, h, w]
    return static, latents - static


def perturbation() -> None:
    backbone = TinyWan22A14BBackbone()
    parts = backbone.load("cpu")
    fmt = backbone.video_format
    context = torch.randn(2, parts.text.max_length, 32, generator=torch.Generator().manual_seed(1))
    noise = initial_noise(parts, fmt.frames, fmt.height, fmt.width, seed=3)
    guidance = backbone.sampling
    base = sample_latents(
        parts, context, noise, STEPS, guidance.guidance, UNIPC, expert_guidance=guidance.expert_guidance
    )
    base_static, base_motion = _split(base)
    sites = backbone.adapter_sites(parts.denoiser)
    for kind in ("identity", "motion"):
        for expert in WAN22_A14B.experts():
            torch.manual_seed(0)
            condition = parts.appearance_dim if kind == "motion" else None
            adapters: Any = AdapterSet.for_backbone(
                kind, expert_sites(sites, [expert]), condition, backbone.adapter_design
            )  # type: ignore[arg-type]
            with torch.no_grad():
                for p in adapters.parameters():
                    p.normal_(0.0, 0.05)
            adapters.attach(parts.denoiser)
            if kind == "motion":
                adapters.set_appearance(
                    torch.randn(2, parts.appearance_dim, generator=torch.Generator().manual_seed(2))
                )
            try:
                out = sample_latents(
                    parts, context, noise, STEPS, guidance.guidance, UNIPC, expert_guidance=guidance.expert_guidance
                )
            finally:
                adapters.detach()
            static, motion = _split(out)
            d_static = float((static - base_static).norm() / base_static.norm())
            d_motion = float((motion - base_motion).norm() / base_motion.norm())
            print(
                f"{kind} adapters on {expert.name}: static part changed {d_static:.3f}, frame-to-frame part {d_motion:.3f}"
            )


if __name__ == "__main__":
    training_share()
    sampling_steps()
    perturbation()
