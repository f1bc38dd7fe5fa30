"""Strength sweeps: one prompt and seed composed over every combination of subject and
motion checkpoints and scales, so the identity/motion balance users of the authors' code
hand-tuned checkpoint by checkpoint is one command and one picture.

    dv compose dog:step500,dog:v1 bear-walk "in the snow" --subject-scale 0.5,1 --motion-scale 0.5,1

Rows are subject settings (checkpoint x scale), columns motion settings. Each cell is an
ordinary compose (same seed, the backbone loaded once) written as its own video; the grid
PNG shows a few frames of each cell under row and column labels, and `index.json` lists
every cell with its settings, files and scores.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.events import EventHandler, Note, ignore_events

if TYPE_CHECKING:
    from PIL import Image

    from dreamvideo_cli.composition import ComposeConfig
    from dv_registry import Registry

FRAMES_PER_CELL = 4
THUMB = 112


def split_list(value: str) -> list[str]:
    """`a,b,c` -> [a, b, c] (empty items dropped)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_scales(value: str, option: str) -> list[float]:
    try:
        scales = [float(part) for part in split_list(value)]
    except ValueError:
        raise DVError(
            f"{option} takes numbers separated by commas, got {value!r}", f"e.g. {option} 0.5,0.75,1"
        ) from None
    if not scales:
        raise DVError(f"{option} is empty", f"e.g. {option} 1")
    return scales


def parse_expert_guidance(value: str | None) -> tuple[tuple[str, float], ...]:
    """`--expert-guidance low=3` or `high=4,low=3`: (expert, scale) pairs, in the order given."""
    pairs: list[tuple[str, float]] = []
    for part in split_list(value or ""):
        name, _, scale = part.partition("=")  # no "=": an empty scale, refused below
        try:
            if not name.strip():
                raise ValueError(part)
            pairs.append((name.strip(), float(scale)))
        except ValueError:
            raise DVError(
                f"--expert-guidance takes EXPERT=SCALE pairs separated by commas, got {value!r}",
                "e.g. --expert-guidance high=4,low=3",
            ) from None
    return tuple(pairs)


@dataclass(frozen=True)
class SweepCell:
    subject: str  # a registry ref, or "-"
    motion: str
    subject_scale: float
    motion_scale: float

    @property
    def row(self) -> str:
        return f"{self.subject} x{self.subject_scale:g}" if self.subject != "-" else "no subject"

    @property
    def column(self) -> str:
        return f"{self.motion} x{self.motion_scale:g}" if self.motion != "-" else "no motion"

    @property
    def id(self) -> str:
        def safe(ref: str) -> str:
            return re.sub(r"[^A-Za-z0-9_.-]+", "_", ref) if ref != "-" else "none"

        return f"{safe(self.subject)}-s{self.subject_scale:g}--{safe(self.motion)}-m{self.motion_scale:g}"


def sweep_cells(
    subjects: list[str], motions: list[str], subject_scales: list[float], motion_scales: list[float]
) -> list[SweepCell]:
    """Every combination, row by row (subject settings) then column (motion settings)."""
    rows = list(itertools.product(subjects, subject_scales if subjects != ["-"] else [1.0]))
    columns = list(itertools.product(motions, motion_scales if motions != ["-"] else [1.0]))
    cells = [SweepCell(s, m, ss, ms) for (s, ss), (m, ms) in itertools.product(rows, columns)]
    ids = [cell.id for cell in cells]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:  # one file per cell: `dog,dog` would report two videos and write one
        raise DVError(f"the sweep repeats a cell ({twice[0]})", "list each checkpoint and each scale once")
    return cells


def is_sweep(subjects: list[str], motions: list[str], subject_scales: list[float], motion_scales: list[float]) -> bool:
    return max(len(subjects), len(motions), len(subject_scales), len(motion_scales)) > 1


@dataclass
class SweepResult:
    folder: Path
    grid: Path
    index: Path
    cells: list[dict[str, Any]] = field(default_factory=list)
    best: str | None = None  # the id of the best cell by the first metric, if scored


def run_sweep(
    cells: list[SweepCell],
    prompt: str,
    folder: Path,
    config: ComposeConfig,
    *,
    registry: Registry,
    metrics: list[str] | None = None,
    on_event: EventHandler = ignore_events,
    force: bool = False,
) -> SweepResult:
    """Compose every cell into `folder` with one loaded backbone, then the grid and index.

    The sweep is made in a hidden folder beside `folder` and moved into place when whole, so
    `folder` holds exactly the files its index lists: an interrupted sweep leaves nothing, and
    an earlier sweep in `folder` is replaced only with `force`."""
    check_sweep_folder(folder, force)
    scorers = _scorers(metrics or [], config.device)
    building = folder.parent / f".{folder.name}.partial-{secrets.token_hex(4)}"
    building.mkdir(parents=True)
    try:
        result = _run_cells(cells, prompt, building, config, registry, metrics or [], scorers, on_event)
        _move_into_place(building, folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return replace(result, folder=folder, grid=folder / result.grid.name, index=folder / result.index.name)


def check_sweep_folder(folder: Path, force: bool) -> None:
    """A sweep writes a new folder, or replaces an earlier sweep's with `force`; it never
    mixes its videos with others, nor deletes a folder it did not write."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise DVError(f"{folder} is a file, not a folder", "a sweep writes a folder of videos: choose another -o")
    if not any(folder.iterdir()):
        return
    if not (folder / "index.json").is_file():
        raise DVError(f"{folder} is not empty and not a sweep folder", "choose another -o")
    if not force:
        raise DVError(f"{folder} holds an earlier sweep", "choose another -o, or pass --force to replace it")


def _move_into_place(building: Path, folder: Path) -> None:
    """`building` becomes `folder`; an earlier sweep there is moved aside first, then removed."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{secrets.token_hex(4)}"
        folder.rename(old)
        building.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        building.rename(folder)


def _run_cells(
    cells: list[SweepCell],
    prompt: str,
    folder: Path,
    config: ComposeConfig,
    registry: Registry,
    metrics: list[str],
    scorers: dict[str, Any],
    on_event: EventHandler,
) -> SweepResult:
    from dreamvideo_cli.composition import BackboneCache, compose
    from dv_registry.fsutil import atomic_write_bytes

    loaded = BackboneCache()
    rows: list[dict[str, Any]] = []
    videos: dict[str, np.ndarray] = {}
    for i, cell in enumerate(cells):
        on_event(Note(f"cell {i + 1}/{len(cells)}: {cell.row} | {cell.column}"))
        cell_config = replace(config, subject_scale=cell.subject_scale, motion_scale=cell.motion_scale)
        result = compose(
            cell.subject,
            cell.motion,
            prompt,
            folder / f"{cell.id}.mp4",
            cell_config,
            registry=registry,
            on_event=on_event,
            cache=loaded,
        )
        videos[cell.id] = result.frames
        scores = {name: _score(metric, result, registry) for name, metric in scorers.items()}
        rows.append({**asdict(cell), "id": cell.id, "video": result.video.name, "contact_sheet": result.contact_sheet.name,
                     "prompt": result.prompt, "seed": result.seed, "scores": scores})  # fmt: skip
    best = _best(rows, metrics, scorers)
    grid = folder / "grid.png"
    from dreamvideo_cli import media

    media.save_png(sweep_grid(cells, videos, best, prompt), grid)
    index = folder / "index.json"
    atomic_write_bytes(
        index,
        (
            json.dumps(
                {
                    "prompt": prompt,
                    "sweep": swept_lists(cells),
                    "settings": _shared_settings(config),
                    "best": best,
                    "cells": rows,
                },
                indent=2,
                default=str,
            )
            + "\n"
        ).encode(),
    )
    from dreamvideo_cli.pages.sweep_page import write_sweep_page

    write_sweep_page(folder)  # the grid playing in step, in any browser, from file://
    return SweepResult(folder, grid, index, rows, best)


def swept_lists(cells: list[SweepCell]) -> dict[str, list[Any]]:
    """What the sweep went over, each list in the order given: the index says this, not the
    first cell's values."""
    return {
        "subjects": list(dict.fromkeys(c.subject for c in cells)),
        "motions": list(dict.fromkeys(c.motion for c in cells)),
        "subject_scales": list(dict.fromkeys(c.subject_scale for c in cells)),
        "motion_scales": list(dict.fromkeys(c.motion_scale for c in cells)),
    }


def _shared_settings(config: ComposeConfig) -> dict[str, Any]:
    """The compose settings every cell shares (the scales are each cell's own)."""
    return {k: v for k, v in asdict(config).items() if k not in ("subject_scale", "motion_scale")}


def _scorers(names: list[str], device: str) -> dict[str, Any]:
    """The named metrics, made and prepared (missing weights fail before any compose)."""
    from dreamvideo_cli.evaluate import metric_classes
    from dreamvideo_cli.runtime import pick_device

    if not names:
        return {}
    classes, _ = metric_classes(names)
    metrics = {name: cls(device=str(pick_device(device))) for name, cls in classes.items()}
    for metric in metrics.values():
        metric.prepare()
    return metrics


def _score(metric: Any, result: Any, registry: Registry) -> float | None:
    from dreamvideo_cli.evaluate import reference_arrays, score_sample
    from dreamvideo_cli.metrics import EvalSample

    subject = result.metadata.get("subject")
    refs = reference_arrays(registry, registry.resolve(subject["ref"])) if subject else []
    if "reference_images" in metric.needs and not refs:
        return None
    sample = EvalSample(result.frames, result.prompt, refs, {"metadata": result.metadata, "video": str(result.video)})
    value = score_sample(metric, sample, explicit=True)
    return value if isinstance(value, float) else None


def _best(rows: list[dict[str, Any]], names: list[str], scorers: dict[str, Any]) -> str | None:
    if not names or not scorers:
        return None
    first = names[0]
    higher = bool(getattr(scorers[first], "higher_is_better", True))
    scored = [r for r in rows if r["scores"].get(first) is not None]
    if not scored:
        return None
    pick = max(scored, key=lambda r: r["scores"][first]) if higher else min(scored, key=lambda r: r["scores"][first])
    return str(pick["id"])


def sweep_grid(cells: list[SweepCell], videos: dict[str, np.ndarray], best: str | None, prompt: str) -> Image.Image:
    """Rows of subject settings, columns of motion settings; each cell a strip of a few
    evenly spaced frames; the best cell (if scored) framed in red."""
    from PIL import Image, ImageDraw, ImageFont

    rows = list(dict.fromkeys(c.row for c in cells))
    columns = list(dict.fromkeys(c.column for c in cells))
    font = ImageFont.load_default(size=12)
    label_w, head_h, gap = 150, 36, 6
    cell_w = FRAMES_PER_CELL * THUMB
    sheet = Image.new("RGB", (label_w + len(columns) * (cell_w + gap), head_h + len(rows) * (THUMB + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), prompt[:120], fill=(0, 0, 0), font=font)
    for j, column in enumerate(columns):
        draw.text((label_w + j * (cell_w + gap) + 4, head_h - 16), column, fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        draw.text((4, head_h + i * (THUMB + gap) + THUMB // 2 - 6), row, fill=(0, 0, 0), font=font)
    for cell in cells:
        i, j = rows.index(cell.row), columns.index(cell.column)
        left, top = label_w + j * (cell_w + gap), head_h + i * (THUMB + gap)
        frames = videos[cell.id]
        picks = np.unique(np.round(np.linspace(0, len(frames) - 1, FRAMES_PER_CELL)).astype(int))
        for k, index in enumerate(picks):
            tile = Image.fromarray(frames[index]).resize((THUMB, THUMB), Image.Resampling.BILINEAR)
            sheet.paste(tile, (left + k * THUMB, top))
        if cell.id == best:
            draw.rectangle((left - 2, top - 2, left + cell_w + 1, top + THUMB + 1), outline=(220, 0, 0), width=3)
    return sheet
