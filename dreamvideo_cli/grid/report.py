"""Merging a grid: every cell's result read back, and the files process 0 writes from them.

- `merge_results`: each cell's result file as results.json holds it (no timings, no resume
  key, no process number, so results.json is the same however the work was split).
- `summarize`: each metric's mean over all scored cells, per subject and per motion.
- `write_grid_outputs`: results.json, results.csv, summary.json and the contact sheet(s).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from dreamvideo_cli import media
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.events import EventHandler, StageFinished, StageStarted, StepDone, ignore_events
from dreamvideo_cli.grid.plan import GridPlan, write_text_atomic

__all__ = [
    "FRAMES_PER_ROW",
    "ROWS_PER_SHEET",
    "grid_contact_sheets",
    "merge_results",
    "public_cell",
    "summarize",
    "write_grid_outputs",
]


def merge_results(plan: GridPlan) -> list[dict[str, Any]]:
    """Every cell's result as results.json holds it, in grid order; a cell whose result file
    is missing or stale (another key) is reported as missing."""
    merged = []
    for cell in plan.cells:
        found = plan.read_result(cell)
        if found is None or found.get("key") != plan.keys[cell.id]:
            found = {
                "id": cell.id, "subject": cell.subject, "motion": cell.motion, "prompt_index": cell.prompt_index,
                "prompt": cell.prompt, "seed": cell.seed, "status": "missing", "error": "no result was written",
                "scores": {}, "skipped": {},
            }  # fmt: skip
        merged.append(public_cell(found, plan.metric_names))
    return merged


_PUBLIC_FIELDS = (
    "id",
    "subject",
    "subject_digest",
    "motion",
    "motion_digest",
    "prompt_index",
    "prompt",
    "seed",
    "subject_scale",
    "motion_scale",
    "final_prompt",
    "eval_prompt",
    "video",
    "contact_sheet",
    "status",
    "error",
)


def public_cell(found: dict[str, Any], metric_names: list[str]) -> dict[str, Any]:
    """A cell's result file as results.json holds it: every metric of the grid, in order."""
    # Timings and the resume key stay in the per-cell file: results.json is the same
    # whichever process, machine or run made each cell.
    cell = {name: found.get(name) for name in _PUBLIC_FIELDS}
    scores = found.get("scores") or {}
    cell["scores"] = {name: scores.get(name) for name in metric_names}
    cell["skipped"] = {k: v for k, v in (found.get("skipped") or {}).items() if k in metric_names}
    return cell


def _means(rows: list[dict[str, Any]], metric_names: list[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in metric_names:
        values = [float(r["scores"][name]) for r in rows if r["status"] == "ok" and r["scores"].get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def summarize(cells: list[dict[str, Any]], metric_names: list[str]) -> dict[str, Any]:
    """Mean of each metric over all scored cells, per subject and per motion."""

    def grouped(key: str) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for cell in cells:
            groups.setdefault(str(cell[key]), []).append(cell)
        return {
            name: {"cells": sum(c["status"] == "ok" for c in rows), "means": _means(rows, metric_names)}
            for name, rows in groups.items()
        }

    return {
        "cells": len(cells),
        "scored": sum(c["status"] == "ok" for c in cells),
        "failed": sum(c["status"] != "ok" for c in cells),
        "metrics": metric_names,
        "overall": _means(cells, metric_names),
        "per_subject": grouped("subject"),
        "per_motion": grouped("motion"),
    }


def write_grid_outputs(
    output: Path,
    grid: dict[str, Any],
    metric_names: list[str],
    cells: list[dict[str, Any]],
    summary: dict[str, Any],
    on_event: EventHandler,
) -> dict[str, Path]:
    """results.json (`grid`: what was asked for; the metrics; every cell), results.csv,
    summary.json and the contact sheet(s) under `output`; returns what was written."""
    files: dict[str, Path] = {}
    document = {"grid": grid, "metrics": metric_names, "cells": cells}
    files["results_json"] = output / "results.json"
    write_text_atomic(files["results_json"], json.dumps(document, indent=2, sort_keys=True) + "\n")

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["id", "subject", "subject_scale", "motion", "motion_scale", "prompt", "seed", "final_prompt"]
    columns += ["eval_prompt", "status"]
    writer.writerow([*columns, *metric_names, "video", "error"])
    for cell in cells:
        values = [cell.get(c) for c in columns]
        metrics = [("" if cell["scores"].get(n) is None else repr(float(cell["scores"][n]))) for n in metric_names]
        writer.writerow(
            [("" if v is None else v) for v in values] + metrics + [cell.get("video") or "", cell.get("error") or ""]
        )
    files["results_csv"] = output / "results.csv"
    write_text_atomic(files["results_csv"], buffer.getvalue())

    files["summary"] = output / "summary.json"
    write_text_atomic(files["summary"], json.dumps(summary, indent=2, sort_keys=True) + "\n")

    on_event(StageStarted("sheet", len(cells), "contact sheet of the grid", unit="cell"))
    pages = grid_contact_sheets(output, cells, metric_names, on_event=on_event)
    on_event(StageFinished("sheet"))
    for number, page in enumerate(pages, start=1):
        name = "grid.png" if len(pages) == 1 else f"grid-{number:03d}.png"
        files[f"contact_sheet_{number}"] = media.save_png(page, output / name)
    return files


ROWS_PER_SHEET = 100
FRAMES_PER_ROW = 8


def grid_contact_sheets(
    output: Path,
    cells: list[dict[str, Any]],
    metric_names: list[str],
    *,
    thumb: int = 96,
    on_event: EventHandler = ignore_events,
) -> list[Image.Image]:
    """One row per cell (a caption, then evenly spaced frames), at most ROWS_PER_SHEET rows a page."""
    font = ImageFont.load_default(size=11)
    label_width, gap = 260, 2
    row_height = thumb
    pages: list[Image.Image] = []
    for start in range(0, max(len(cells), 1), ROWS_PER_SHEET):
        chunk = cells[start : start + ROWS_PER_SHEET]
        tiles = []
        for row, cell in enumerate(chunk):
            tiles.append(_row_tiles(output / str(cell.get("video") or ""), cell["status"] == "ok", thumb))
            on_event(StepDone("sheet", start + row + 1, len(cells)))
        columns = max((len(t) for t in tiles), default=0)
        size = (label_width + columns * (thumb + gap), max(1, len(chunk)) * (row_height + gap))
        sheet = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(sheet)
        for row, (cell, row_tiles) in enumerate(zip(chunk, tiles, strict=True)):
            top = row * (row_height + gap)
            for i, line in enumerate(_caption(cell, metric_names)[: max(1, row_height // 13)]):
                draw.text((4, top + 2 + 13 * i), line, fill=(0, 0, 0), font=font)
            for slot, tile in enumerate(row_tiles):
                sheet.paste(tile, (label_width + slot * (thumb + gap), top))
        pages.append(sheet)
    return pages


def _caption(cell: dict[str, Any], metric_names: list[str]) -> list[str]:
    lines = [
        f"{cell['subject']} x {cell['motion']}  seed {cell['seed']}",
        str(cell.get("eval_prompt") or cell["prompt"])[:48],
    ]
    if cell["status"] != "ok":
        return [*lines, f"{cell['status']}: {str(cell.get('error') or '')[:40]}"]
    scores = cell["scores"]
    return lines + [
        f"{name} {scores[name]:.3f}" if scores.get(name) is not None else f"{name} -" for name in metric_names
    ]


def _row_tiles(video: Path, ok: bool, thumb: int) -> list[Image.Image]:
    """Evenly spaced frames of a cell's video, each fitted into a thumb x thumb square."""
    if not ok or not video.is_file():
        return []
    try:
        frames = media.read_frames(video, None)
    except DVError:
        return []
    picks = np.unique(np.round(np.linspace(0, len(frames) - 1, min(FRAMES_PER_ROW, len(frames)))).astype(int))
    return [ImageOps.pad(Image.fromarray(frames[i]), (thumb, thumb), color=(255, 255, 255)) for i in picks]
