"""`dv plan`: how much GPU and host memory a run will take, before it starts, without its
weights and without a GPU; and the cheapest settings that make it fit a card.

It runs the engine's own code for the stage once on fake tensors (`FakeTensorMode`) with the
live-bytes tracker (`dreamvideo_cli.memory`), so every later change to the engine is planned
for free: the trainer's `step_once` with the real `textual_inversion`, identity and motion
losses, `MotionClips.encode` and `SubjectPhotos.encode`, `sample_video` with one sampling
step. A plan takes seconds: Wan 14B's motion stage about 10 s on two CPU cores, a search for
the settings that fit 24 GiB 40-70 s.

    world.py    the fake world: a backbone's parts as fake tensors built from the meta device,
                fake "cpu" tensors standing for the GPU and fake "meta" ones for the host,
                and what the engine does differently on a GPU (autocast, offloading)
    stages.py   each stage run by the engine's code, split into phases (loading, encoding, a
                training step, a sampling step, decoding), each with its own peaks
    planner.py  `plan_stage`: one stage for one request; `--shard` over N processes
    fitting.py  `fit`: the cheapest settings that fit a budget, the command line to run them,
                and what the copies of block swap and activation offload cost (an estimate)
    model.py    the request and the results as plain data

    plan = plan_stage(PlanRequest("motion", "wan-14b", frames=33))
    plan.gpu_peak, plan.host_peak, plan.phases          # bytes, per phase and category
    found = fit(PlanRequest("motion", "wan-14b", frames=33), 24 * GiB)
    found.settings, found.command()

Checked (tests/test_plan.py): for a CPU run of tiny, tiny-wan and a 143M-parameter Wan-shaped
transformer, the planned peak of a training step equals torch.profiler's (profile_memory=True)
within 0.2%. A GPU run differs from its stand-in where CUDA's kernels keep other
intermediates than the CPU's (memory.fake.CudaRules covers autocast): to be checked on a GPU
against torch.cuda.max_memory_allocated per stage.
"""

from typing import TYPE_CHECKING, Any

# The plain data is imported at once, without torch: the command line builds `Settings` from
# its options before it knows whether anything will be planned. The planner itself (torch,
# the engine) is imported on first use of one of its names.
from dreamvideo_cli.plan.model import (
    STAGE_NAMES,
    GiB,
    PhasePlan,
    PlanRequest,
    Settings,
    Split,
    StageName,
    StagePlan,
    Transfer,
)

if TYPE_CHECKING:
    from dreamvideo_cli.plan.fitting import HEADROOM, Attempt, Fit, Slowdown, command_line, fit, slowdown
    from dreamvideo_cli.plan.planner import plan_stage

_LAZY = {
    "HEADROOM": "fitting", "Attempt": "fitting", "Fit": "fitting", "Slowdown": "fitting", "command_line": "fitting",
    "fit": "fitting", "slowdown": "fitting", "plan_stage": "planner",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = [
    "HEADROOM",
    "STAGE_NAMES",
    "Attempt",
    "Fit",
    "GiB",
    "PhasePlan",
    "PlanRequest",
    "Settings",
    "Slowdown",
    "Split",
    "StageName",
    "StagePlan",
    "Transfer",
    "command_line",
    "fit",
    "plan_stage",
    "slowdown",
]
