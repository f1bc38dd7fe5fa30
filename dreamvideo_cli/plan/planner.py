"""Planning one stage: check the request, build the backbone's parts in the planning world,
apply the memory levers as the engine does, run the stage (plan/stages.py), and adjust the
figures for `--shard` over N processes."""

from __future__ import annotations

import time
from dataclasses import replace

from torch import nn

from dreamvideo_cli.backbone import Backbone, Components
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.learn.motion import MotionConfig
from dreamvideo_cli.learn.subject import SubjectConfig
from dreamvideo_cli.memory.levers import MemoryLevers, check_combination
from dreamvideo_cli.memory.units import family_units
from dreamvideo_cli.plan.model import PhasePlan, PlanRequest, StagePlan
from dreamvideo_cli.plan.stages import Phases, StageInputs, StageRun, run_compose, run_motion, run_subject
from dreamvideo_cli.plan.world import PlanningWorld
from dreamvideo_cli.plugins import get_backbone

__all__ = ["plan_stage", "stage_inputs"]

_RUNNERS = {"subject": run_subject, "motion": run_motion, "compose": run_compose}


def stage_inputs(request: PlanRequest, backbone: Backbone) -> StageInputs:
    """The frames, batch and frame rate the stage's command would use, checked as it checks them."""
    if request.processes < 1:
        raise DVError(f"--processes must be at least 1, got {request.processes}", "use --processes 1")
    if request.batch_size is not None and request.batch_size < 1:
        raise DVError(f"--batch-size must be at least 1, got {request.batch_size}", "use --batch-size 1")
    if request.settings.blocks_to_swap < 0:
        raise DVError(f"--blocks-to-swap must be 0 or more, got {request.settings.blocks_to_swap}")
    if request.shard and request.processes < 2:
        raise DVError(
            "--shard splits the frozen weights over several processes, and this is one",
            "plan for them with --processes N",
        )
    asked = request.settings
    check_combination(  # as the trainer refuses them (Trainer.start)
        shard=request.shard, fp8=asked.fp8, blocks_to_swap=asked.blocks_to_swap,
        offload_activations=asked.offload_activations,
    )  # fmt: skip
    if request.stage == "compose":
        if request.shard or request.processes > 1:
            raise DVError("dv compose runs in one process", "plan compose without --shard and --processes")
        if request.batch_size is not None:
            raise DVError(
                "dv compose samples one video (both guidance branches as one batch of 2)", "drop --batch-size"
            )
    fmt = backbone.video_format
    if request.stage == "subject":
        if request.frames is not None:
            raise DVError("subject learning works on photos, one frame each", "--frames is for motion and compose")
        frames, batch = 1, request.batch_size or SubjectConfig.batch_size
    elif request.stage == "motion":
        frames, batch = request.frames or backbone.motion_frames, request.batch_size or MotionConfig.batch_size
        backbone.check_frames(frames)
    else:
        frames, batch = request.frames or fmt.frames, 2
        backbone.check_frames(frames)
    settings = request.settings
    levers = MemoryLevers(settings.fp8, settings.blocks_to_swap, settings.offload_activations)
    return StageInputs(frames, batch, backbone.motion_fps, settings.gradient_checkpointing, levers)


def plan_stage(request: PlanRequest, backbone: Backbone | None = None) -> StagePlan:
    """Run `request.stage` once on fake tensors and return its phases' peaks, per process.
    `backbone`: an instance to plan instead of the registered `request.backbone` (built from
    its random-weights path, on the meta device)."""
    started = time.perf_counter()
    if backbone is None:
        backbone = get_backbone(request.backbone)(random_weights=True)
    inputs = stage_inputs(request, backbone)
    world = PlanningWorld(request.device)
    parts = world.load(backbone)
    phases = Phases(world)
    with world.running():
        _RUNNERS[request.stage](StageRun(world, backbone, parts, inputs, phases))
    done = tuple(phases.done)
    if request.shard:
        done = _sharded(done, parts, request.processes)
    fmt = backbone.video_format
    units = family_units(parts.denoiser, parts.family)
    unit_bytes = sum(_frozen_bytes(u) for u in units) // max(1, len(units))
    return StagePlan(
        request, inputs.frames, inputs.batch_size, fmt.height, fmt.width, done, time.perf_counter() - started,
        len(units), unit_bytes,
    )  # fmt: skip


def _frozen_bytes(module: nn.Module) -> int:
    total = 0
    seen: set[int] = set()
    for t in (*module.parameters(), *module.buffers()):
        if t.requires_grad or id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def _sharded(phases: tuple[PhasePlan, ...], parts: Components, processes: int) -> tuple[PhasePlan, ...]:
    """`--shard` over N processes (`distributed.shard_denoiser`): each rank holds 1/N of the
    frozen denoiser (dim 0 of every tensor split) and gathers one unit whole while it runs
    (a layer the family checkpoints, or the root's own weights: embeddings, heads)."""
    units = family_units(parts.denoiser, parts.family)
    whole = _frozen_bytes(parts.denoiser)
    unit_bytes = [_frozen_bytes(u) for u in units]
    largest = max([*unit_bytes, whole - sum(unit_bytes)])
    delta = -whole + -(-whole // processes) + largest
    return tuple(replace(p, gpu=replace(p.gpu, weights=p.gpu.weights + delta, peak=p.gpu.peak + delta)) for p in phases)
