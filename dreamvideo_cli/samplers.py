"""The sampler contract: a named recipe for a diffusers scheduler built from the
backbone's training noise schedule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dreamvideo_cli.backbone import NoiseSchedule


@dataclass(frozen=True)
class Sampler:
    name: str
    description: str
    default_steps: int
    # Builds a fresh diffusers scheduler; imported lazily so registering costs nothing.
    make_scheduler: Callable[[NoiseSchedule], Any]


def ddim_scheduler(schedule: NoiseSchedule) -> Any:
    from diffusers import DDIMScheduler

    # eta is passed at step time (0 = deterministic DDIM, as the paper samples).
    return DDIMScheduler(
        **schedule.as_config(),
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


def dpmsolver_scheduler(schedule: NoiseSchedule) -> Any:
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        **schedule.as_config(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="leading",
        steps_offset=1,
    )


def unipc_scheduler(schedule: NoiseSchedule) -> Any:
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        **schedule.as_config(), timestep_spacing="leading", steps_offset=1
    )


DDIM = Sampler("ddim", "DDIM, eta 0 (the paper's sampler)", 50, ddim_scheduler)
DPM_SOLVER = Sampler("dpmsolver++", "DPM-Solver++ (2M), good at 20-25 steps", 25, dpmsolver_scheduler)
UNIPC = Sampler("unipc", "UniPC multistep, good at 20-25 steps", 25, unipc_scheduler)
