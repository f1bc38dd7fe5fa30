"""The sampler contract: a named recipe for a diffusers scheduler built from the backbone's
training objective (`dreamvideo_cli.objectives`): DDPM's beta schedule and prediction
type, or rectified flow's shift."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.objectives import DDPMObjective, FlowMatchObjective, Objective

# Registering samplers must not import torch or diffusers (`dv --help` stays instant):
# each scheduler's class is imported when it is built.


@dataclass(frozen=True)
class Sampler:
    name: str
    description: str
    default_steps: int
    # Builds a fresh diffusers scheduler.
    make_scheduler: Callable[[Objective], Any]


def _flow(objective: Objective) -> FlowMatchObjective | None:
    """The objective when it is rectified flow, else None."""
    return objective if isinstance(objective, FlowMatchObjective) else None


def _ddpm(objective: Objective, sampler: str) -> DDPMObjective:
    if not isinstance(objective, DDPMObjective):
        raise DVError(
            f"the {sampler} sampler needs a DDPM backbone, and this one is trained on rectified flow",
            "use --sampler unipc or euler",
        )
    return objective


def _flow_sigmas(flow: FlowMatchObjective) -> dict[str, Any]:
    return {
        "num_train_timesteps": flow.num_train_timesteps,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": flow.shift,
    }


def ddim_scheduler(objective: Objective) -> Any:
    from diffusers import DDIMScheduler

    # eta is passed at step time (0 = deterministic DDIM, as the paper samples).
    return DDIMScheduler(
        **_ddpm(objective, "ddim").schedule.as_config(),
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


def dpmsolver_scheduler(objective: Objective) -> Any:
    from diffusers import DPMSolverMultistepScheduler

    if (flow := _flow(objective)) is not None:
        return DPMSolverMultistepScheduler(**_flow_sigmas(flow), algorithm_type="dpmsolver++", solver_order=2)
    return DPMSolverMultistepScheduler(
        **_ddpm(objective, "dpmsolver++").schedule.as_config(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="leading",
        steps_offset=1,
    )


def unipc_scheduler(objective: Objective) -> Any:
    from diffusers import UniPCMultistepScheduler

    if (flow := _flow(objective)) is not None:
        # WanPipeline's own scheduler (the hub's scheduler_config.json of Wan 2.1 T2V).
        return UniPCMultistepScheduler(
            **_flow_sigmas(flow),
            solver_order=2,
            solver_type="bh2",
            predict_x0=True,
            lower_order_final=True,
            final_sigmas_type="zero",
            timestep_spacing="linspace",
            steps_offset=0,
        )
    return UniPCMultistepScheduler(
        **_ddpm(objective, "unipc").schedule.as_config(), timestep_spacing="leading", steps_offset=1
    )


def euler_scheduler(objective: Objective) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    flow = _flow(objective)
    if flow is None:
        raise DVError(
            "the euler sampler is for rectified-flow backbones (wan)", "use --sampler ddim, dpmsolver++ or unipc"
        )
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=flow.num_train_timesteps, shift=flow.shift)


DDIM = Sampler("ddim", "DDIM, eta 0 (the paper's sampler; DDPM backbones)", 50, ddim_scheduler)
DPM_SOLVER = Sampler("dpmsolver++", "DPM-Solver++ (2M), good at 20-25 steps", 25, dpmsolver_scheduler)
UNIPC = Sampler("unipc", "UniPC multistep, good at 20-25 steps (Wan's own sampler)", 25, unipc_scheduler)
EULER = Sampler("euler", "flow-matching Euler (rectified-flow backbones)", 50, euler_scheduler)
