"""Evaluation grids: compose and score every subject x motion x prompt x seed.

A grid runs in three steps, one module and one named function each:

- planning (`plan.py`): `plan_grid` checks the spec and works out what every process must
  agree on before any work: the cells in a fixed order, the subjects' and motions'
  manifests, the metrics and each cell's resume key; `cell_status` says which cells are
  done.
- running a cell (`cell.py`): `run_cell` composes one cell (unless its video is already
  there), scores what is missing and writes the cell's result file atomically, so a re-run
  skips finished cells.
- merging (`report.py`): `merge_results` reads every cell's result back (process 0), and
  `write_grid_outputs` writes results.json, results.csv, summary.json and the contact sheet.

`run_grid` (`run.py`) puts them together, unchanged under `accelerate launch`.
The engine never prints: it emits `dreamvideo_cli.events`.
"""

from dreamvideo_cli.grid.cell import CellRunner, run_cell, start_runner
from dreamvideo_cli.grid.plan import (
    GridCell,
    GridPlan,
    GridSpec,
    cell_key,
    cell_settings,
    cell_status,
    grid_cells,
    plan_grid,
    read_prompts,
)
from dreamvideo_cli.grid.report import (
    grid_contact_sheets,
    merge_results,
    summarize,
    write_grid_outputs,
)
from dreamvideo_cli.grid.run import GridResult, run_grid

__all__ = [
    "CellRunner",
    "GridCell",
    "GridPlan",
    "GridResult",
    "GridSpec",
    "cell_key",
    "cell_settings",
    "cell_status",
    "grid_cells",
    "grid_contact_sheets",
    "merge_results",
    "plan_grid",
    "read_prompts",
    "run_cell",
    "run_grid",
    "start_runner",
    "summarize",
    "write_grid_outputs",
]
