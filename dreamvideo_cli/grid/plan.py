"""Planning a grid: its cells, and what every process must agree on before any work.

`plan_grid` checks a GridSpec and resolves it into a GridPlan: the cells in a fixed order,
the subjects' and motions' manifests, the metrics, and each cell's resume key. `cell_status`
says, from a cell's result file, whether it is done, needs scoring again, or composing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.evaluate import NEED_WORDS, metric_classes, unmet_needs
from dreamvideo_cli.metrics import Metric
from dreamvideo_cli.plugins import get_sampler
from dv_registry.fsutil import atomic_write_bytes, read_json_object

if TYPE_CHECKING:
    from dreamvideo_cli.composition import ComposeConfig
    from dv_registry import Manifest, Registry

__all__ = [
    "GridCell",
    "GridPlan",
    "GridSpec",
    "cell_key",
    "cell_settings",
    "cell_status",
    "grid_cells",
    "plan_grid",
    "read_prompts",
    "write_text_atomic",
]


@dataclass
class GridSpec:
    """An evaluation grid: every subject x motion x prompt x seed, composed and scored."""

    subjects: list[str]  # registry refs; "-" for none (motion only)
    motions: list[str]  # registry refs; "-" for none (subject only)
    prompts: list[str]
    seeds: list[int]
    output: Path
    compose: ComposeConfig
    metrics: list[str] | None = None  # None: every installed metric
    metric_device: str | None = None  # None: the compose device
    # Adapter strengths to sweep, as compose's comma lists; empty or one value: compose's own
    # (cells keep the ids and resume keys they had before grids swept scales).
    subject_scales: list[float] = field(default_factory=list)
    motion_scales: list[float] = field(default_factory=list)
    force: bool = False  # remove the cells of another grid found in `output`


@dataclass(frozen=True)
class GridCell:
    id: str
    subject: str
    motion: str
    prompt_index: int
    prompt: str
    seed: int
    subject_scale: float | None = None  # None: the compose settings' scale
    motion_scale: float | None = None


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are ignored."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DVError(f"prompts file {path} does not exist", "pass a text file with one prompt per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DVError(f"cannot read prompts file {path}: {exc}", "save it as UTF-8 text") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise DVError(f"no prompts in {path}", "write one prompt per line")
    return prompts


def _slug(ref: str) -> str:
    if ref in ("-", ""):
        return "none"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ref).strip("_") or "x"


def _swept(scales: list[float], ref: str) -> list[float | None]:
    return list(scales) if len(scales) > 1 and ref != "-" else [None]


def _scale_tag(scale: float | None) -> str:
    return "" if scale is None else f"-x{scale:g}"


def grid_cells(spec: GridSpec) -> list[GridCell]:
    """The cells in a fixed order: subject (and its scale), then motion (and its scale), then
    prompt, then seed."""
    cells = []
    for subject in spec.subjects:
        for s_scale in _swept(spec.subject_scales, subject):
            for motion in spec.motions:
                for m_scale in _swept(spec.motion_scales, motion):
                    for index, prompt in enumerate(spec.prompts):
                        for seed in spec.seeds:
                            cell_id = (
                                f"{_slug(subject)}{_scale_tag(s_scale)}--{_slug(motion)}{_scale_tag(m_scale)}"
                                f"--p{index:03d}--s{seed}"
                            )
                            cells.append(GridCell(cell_id, subject, motion, index, prompt, seed, s_scale, m_scale))
    return cells


def cell_settings(plan: GridPlan, cell: GridCell) -> dict[str, Any]:
    """The compose settings of one cell: the grid's, with the cell's own scales."""
    own = {"subject_scale": cell.subject_scale, "motion_scale": cell.motion_scale}
    return {**plan.settings, **{k: v for k, v in own.items() if v is not None}}


@dataclass
class GridPlan:
    """What every process of a grid works out alike before any cell runs."""

    spec: GridSpec
    cells: list[GridCell]
    subjects: dict[str, Manifest | None]  # ref -> manifest; "-" -> None
    motions: dict[str, Manifest | None]
    metrics: dict[str, type[Metric]]  # name -> class, in the order of the results
    explicit: bool  # the user named the metrics: what they cannot score is an error
    settings: dict[str, Any]  # the compose settings that change what a cell shows
    keys: dict[str, str] = field(default_factory=dict)  # cell id -> resume key

    @property
    def metric_names(self) -> list[str]:
        return list(self.metrics)

    @property
    def cell_dir(self) -> Path:
        return Path(self.spec.output) / "cells"

    def video(self, cell: GridCell) -> Path:
        return self.cell_dir / f"{cell.id}.mp4"

    def result_file(self, cell: GridCell) -> Path:
        return self.cell_dir / f"{cell.id}.result.json"

    def read_result(self, cell: GridCell) -> dict[str, Any] | None:
        """The cell's result file; None if it is missing or unreadable."""
        return read_json_object(self.result_file(cell))

    def write_result(self, cell: GridCell, result: dict[str, Any]) -> None:
        """Write the cell's result file so that other processes and re-runs see all of it or none."""
        write_text_atomic(self.result_file(cell), json.dumps(result, indent=2, sort_keys=True) + "\n")

    def blank_metrics(self, cell: GridCell) -> dict[str, str]:
        """metric -> why it cannot be computed for this cell (a grid cell always has a prompt)."""
        has = {"prompt"}
        if self.subjects[cell.subject] is not None:
            has.add("reference_images")
        if self.motions[cell.motion] is not None:
            has.add("motion")
        missing = {"reference_images": "no subject", "motion": "no motion"}
        return {
            name: "needs "
            + " and ".join(NEED_WORDS.get(n, n) for n in unmet)
            + " ("
            + " and ".join(missing.get(n, n) for n in unmet)
            + " in this cell)"
            for name, cls in self.metrics.items()
            if (unmet := unmet_needs(cls, has))
        }


def plan_grid(spec: GridSpec, registry: Registry) -> GridPlan:
    """Check the spec, resolve its subjects, motions and metrics, and key every cell."""
    _check_spec(spec)
    classes, explicit = metric_classes(spec.metrics)
    if explicit:
        for name, cls in classes.items():
            if "reference_images" in cls.needs and all(s == "-" for s in spec.subjects):
                raise DVError(
                    f"metric {name} needs a subject, and this grid has none",
                    "name subjects: dv eval grid SUBJECTS MOTIONS",
                )
    if spec.compose.sampler:
        get_sampler(spec.compose.sampler)  # a typo should fail once, not once per cell
    plan = GridPlan(
        spec=spec,
        cells=grid_cells(spec),
        subjects=_resolve_refs(registry, spec.subjects, "subject"),
        motions=_resolve_refs(registry, spec.motions, "motion"),
        metrics=classes,
        explicit=explicit,
        settings=_compose_settings(spec.compose),
    )
    plan.keys = {cell.id: cell_key(plan, cell) for cell in plan.cells}
    _check_stale_cells(plan)
    return plan


CELL_FILES = (".mp4", ".mp4.json", ".png", ".result.json")  # what a cell writes into cells/


def stale_cell_files(plan: GridPlan) -> list[Path]:
    """Files in the grid's cells/ that no cell of this grid writes (another grid's cells)."""
    if not plan.cell_dir.is_dir():
        return []
    expected = {cell.id + suffix for cell in plan.cells for suffix in CELL_FILES}
    return sorted(p for p in plan.cell_dir.iterdir() if not p.name.startswith(".") and p.name not in expected)


def _check_stale_cells(plan: GridPlan) -> None:
    """A grid folder holds exactly the cells its results list: another grid's cells there are
    refused, or removed with --force (re-running the same grid resumes it)."""
    stale = stale_cell_files(plan)
    if not stale:
        return
    if not plan.spec.force:
        raise DVError(
            f"{plan.spec.output} holds {len(stale)} files of cells this grid does not have (e.g. {stale[0].name})",
            "use another -o, or pass --force to remove them",
        )
    for path in stale:
        if path.is_file():
            path.unlink(missing_ok=True)


def cell_key(plan: GridPlan, cell: GridCell) -> str:
    """What a cell's video depends on: the subject's and motion's manifest digests (so
    re-learning `dog` recomposes its cells), the prompt, the seed and the compose settings."""
    subject, motion = plan.subjects[cell.subject], plan.motions[cell.motion]
    return _digest(
        {
            "subject": subject.digest if subject is not None else None,
            "motion": motion.digest if motion is not None else None,
            "prompt": cell.prompt,
            "seed": cell.seed,
            "compose": cell_settings(plan, cell),
        }
    )


def cell_status(plan: GridPlan, cell: GridCell) -> tuple[str, dict[str, Any] | None]:
    """'done', 'rescore' (the video is fine, some score is missing; with its result so far)
    or 'compose'."""
    found = plan.read_result(cell)
    if found is None or found.get("key") != plan.keys[cell.id] or not plan.video(cell).is_file():
        return "compose", None
    if found.get("status") == "ok":
        have = set(found.get("scores", {})) | set(found.get("skipped", {}))
        return ("done" if set(plan.metric_names) <= have else "rescore"), found
    if found.get("final_prompt"):  # composed, then scoring failed: score it again
        return "rescore", {**found, "scores": {}, "skipped": {}}
    return "compose", None


def _check_spec(spec: GridSpec) -> None:
    if not spec.subjects or not spec.motions:
        raise DVError("a grid needs subjects and motions", "e.g. dv eval grid A,B X,Y (- for none)")
    if not spec.prompts:
        raise DVError("a grid needs prompts", "pass --prompts FILE")
    if not spec.seeds:
        raise DVError("a grid needs at least one seed", "pass --seeds N with N >= 1")
    if any(s == "-" for s in spec.subjects) and any(m == "-" for m in spec.motions):
        raise DVError(
            "a cell needs a subject, a motion, or both", "use - for the subjects or for the motions, not both"
        )
    for kind, refs in (("subject", spec.subjects), ("motion", spec.motions)):
        slugs = [_slug(ref) for ref in refs]
        twice = sorted({slug for slug in slugs if slugs.count(slug) > 1})
        if twice:
            # Cell files are named after the refs, so two refs with one name would collide.
            raise DVError(f"the {kind}s of the grid repeat {', '.join(twice)}", "list each once")


def _resolve_refs(registry: Registry, refs: list[str], kind: str) -> dict[str, Manifest | None]:
    found: dict[str, Manifest | None] = {}
    for ref in refs:
        if ref == "-":
            found[ref] = None
            continue
        manifest = registry.resolve(ref)
        if manifest.kind != kind:
            raise DVError(
                f"{ref!r} is a {manifest.kind}, not a {kind}", f"the {kind}s of a grid are {kind}s from `dv list`"
            )
        found[ref] = manifest
    return found


def _compose_settings(config: ComposeConfig) -> dict[str, Any]:
    settings = dataclasses.asdict(config)
    # Where and how a cell is written do not change what it shows.
    for key in ("device", "seed", "gif"):
        settings.pop(key, None)
    return settings


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path` so that readers (other processes, a re-run) see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
