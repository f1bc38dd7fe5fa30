"""Running a whole grid: plan, run this process's share of the cells, merge (process 0).

It runs unchanged under `accelerate launch`: cell i of the pending ones goes to process
i % num_processes, and a barrier separates planning from running (everyone has read the same
pending list before anyone writes a result) and running from merging (every result file is
on disk before process 0 reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import PartialState

from dreamvideo_cli.events import (
    EventHandler,
    Note,
    StageFinished,
    StageStarted,
    StepDone,
    ignore_events,
)
from dreamvideo_cli.grid.cell import run_cell, start_runner
from dreamvideo_cli.grid.plan import GridPlan, GridSpec, cell_status, plan_grid
from dreamvideo_cli.grid.report import merge_results, summarize, write_grid_outputs

if TYPE_CHECKING:
    from dv_registry import Registry

__all__ = ["GridResult", "run_grid"]


@dataclass
class GridResult:
    output: Path
    is_main_process: bool
    process_index: int
    num_processes: int
    metrics: list[str]
    cells: list[dict[str, Any]]  # the merged results (process 0 only)
    summary: dict[str, Any]  # process 0 only
    files: dict[str, Path]  # what process 0 wrote: results_json, results_csv, summary, contact sheets
    composed: int  # cells this process composed
    rescored: int  # cells this process only re-scored
    resumed: int  # cells already done before this run
    failed: list[str]  # ids of cells without a result


def run_grid(spec: GridSpec, *, registry: Registry, on_event: EventHandler = ignore_events) -> GridResult:
    """Plan, run this process's share of the pending cells, and (process 0) merge; see the
    module docstring."""
    plan = plan_grid(spec, registry)
    state = _grid_state(spec.compose.device)
    rank, world = int(state.process_index), int(state.num_processes)
    statuses = {cell.id: cell_status(plan, cell) for cell in plan.cells}
    pending = [cell for cell in plan.cells if statuses[cell.id][0] != "done"]
    resumed = len(plan.cells) - len(pending)
    runner = start_runner(plan, registry, pending, state, on_event)
    # Everyone must have read the same pending list before anyone writes a result.
    state.wait_for_everyone()
    mine = pending[rank::world]
    if state.is_main_process:
        _announce(plan, resumed, world, on_event)

    composed = rescored = 0
    on_event(
        StageStarted(
            "grid",
            len(mine),
            "composing and scoring" + (f" on process {rank + 1}/{world}" if world > 1 else ""),
            unit="cell",
        )
    )
    for step, cell in enumerate(mine, start=1):
        kind, previous = statuses[cell.id]
        if run_cell(plan, cell, previous, runner)["final_prompt"] is not None:  # composed, or read back
            composed, rescored = composed + (kind == "compose"), rescored + (kind != "compose")
        on_event(StepDone("grid", step, len(mine)))
    on_event(StageFinished("grid"))

    # Every result file is on disk before process 0 reads them.
    state.wait_for_everyone()
    output = Path(spec.output)
    result = GridResult(
        output, bool(state.is_main_process), rank, world, plan.metric_names, [], {}, {}, composed, rescored, resumed, []
    )
    if not state.is_main_process:
        return result
    result.cells = merge_results(plan)
    result.failed = [c["id"] for c in result.cells if c["status"] != "ok"]
    result.summary = summarize(result.cells, plan.metric_names)
    swept = {
        k for k, scales in (("subject_scale", spec.subject_scales), ("motion_scale", spec.motion_scales)) if scales
    }
    grid = {
        "subjects": spec.subjects,
        "motions": spec.motions,
        "prompts": spec.prompts,
        "seeds": spec.seeds,
        # What was swept, as in a compose sweep's index (one scale: the compose settings')
        "subject_scales": spec.subject_scales or [spec.compose.subject_scale],
        "motion_scales": spec.motion_scales or [spec.compose.motion_scale],
        "compose": {k: v for k, v in plan.settings.items() if k not in swept},
    }
    result.files = write_grid_outputs(output, grid, plan.metric_names, result.cells, result.summary, on_event)
    return result


def _announce(plan: GridPlan, resumed: int, world: int, on_event: EventHandler) -> None:
    spec = plan.spec
    on_event(
        Note(
            f"grid: {len(plan.cells)} cells ({len(spec.subjects)} subject(s) x {len(spec.motions)} motion(s) x "
            f"{len(spec.prompts)} prompt(s) x {len(spec.seeds)} seed(s)), {resumed} already done"
            + (f", split over {world} processes" if world > 1 else "")
        )
    )
    if plan.explicit:
        blank = sorted({name for cell in plan.cells for name in plan.blank_metrics(cell)})
        if blank:
            on_event(Note(f"{', '.join(blank)} left blank for cells without a subject", "warning"))


def _grid_state(device: str) -> PartialState:
    """accelerate's process state; on a CPU it must be asked for explicitly, or each process
    of `accelerate launch --multi_gpu` would think it is alone."""
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return PartialState(cpu=cpu)
