"""Scoring videos with the installed metrics, and evaluation grids.

`evaluate_videos` scores finished videos: the prompt and the subject default to what
`compose` recorded in each video's metadata, placeholder tokens (`<dog>`) become the
subject's init word before text alignment is scored (the authors scored "a dog eating
pizza", not the learned token), and a metric whose inputs are missing is skipped with a
warning, or is an error when it was asked for by name.

`run_grid` composes and scores every subject x motion x prompt x seed cell. It runs
unchanged under `accelerate launch`: cell i of the pending ones goes to process
i % num_processes, each cell's result is a JSON file written atomically (so a re-run
skips finished cells), and after a barrier process 0 merges them into results.json,
results.csv, summary.json and a contact sheet of the grid.

The engine never prints: it emits `dreamvideo_cli.events`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamvideo_cli import media
from dreamvideo_cli.errors import DVError, Interrupted, MissingWeightsError
from dreamvideo_cli.events import (
    EventHandler,
    Note,
    StageFinished,
    StageStarted,
    StepDone,
    ignore_events,
)
from dreamvideo_cli.metrics import EvalSample, Metric

if TYPE_CHECKING:
    import numpy.typing as npt
    from PIL import Image

    from dreamvideo_cli.compose import ComposeConfig

__all__ = [
    "GridCell",
    "GridResult",
    "GridSpec",
    "VideoScores",
    "eval_prompt",
    "evaluate_videos",
    "expand_videos",
    "grid_cells",
    "read_prompts",
    "run_grid",
]

_PLACEHOLDER = re.compile(r"<([A-Za-z0-9][A-Za-z0-9_.\-]*)>")
_NEED_WORDS = {"prompt": "a prompt", "reference_images": "a subject's reference photos"}
_NEED_HINTS = {"prompt": "pass --prompt", "reference_images": "pass --subject"}


# ---------------------------------------------------------------- prompts and subjects


def eval_prompt(prompt: str, token: str | None = None, init_word: str | None = None) -> str:
    """The text a video is scored against: the subject's token becomes its init word, and
    any other `<name>` placeholder becomes `name`."""
    text = prompt
    if token and init_word:
        text = text.replace(token, init_word)
    text = _PLACEHOLDER.sub(lambda m: m.group(1), text)
    return " ".join(text.split())


def _subject_from_metadata(registry: Any, recorded: dict[str, Any]) -> tuple[Any, str | None]:
    """The recorded subject's manifest, by digest first (tags move), else by its ref."""
    from dv_registry import RegistryError

    ref = str(recorded.get("ref") or "")
    digest = str(recorded.get("digest") or "")
    name = ref.split("@")[0].split(":")[0]
    candidates = ([f"{name}@{digest}"] if name and digest.startswith("sha256:") else []) + ([ref] if ref else [])
    for candidate in candidates:
        try:
            manifest = registry.resolve(candidate)
        except RegistryError:
            continue
        if manifest.kind == "subject":
            return manifest, None
    return None, f"its subject {ref or '(unnamed)'} is not in this registry"


def _resolve_subject(registry: Any, ref: str) -> Any:
    manifest = registry.resolve(ref)
    if manifest.kind != "subject":
        raise DVError(f"{ref!r} is a {manifest.kind}, not a subject", "--subject takes a subject from `dv list`")
    return manifest


def _reference_arrays(registry: Any, manifest: Any) -> list[npt.NDArray[np.uint8]]:
    from dreamvideo_cli.learn.store import reference_images

    return [np.asarray(image.convert("RGB"), dtype=np.uint8) for image in reference_images(registry, manifest)]


# ---------------------------------------------------------------- metrics


def _metric_classes(names: Sequence[str] | None) -> tuple[dict[str, type[Metric]], bool]:
    """The metrics to compute, and whether the user named them (then missing inputs are errors)."""
    from dreamvideo_cli.plugins import get_metric, get_metrics

    if names:
        wanted = list(dict.fromkeys(n.strip() for name in names for n in name.split(",") if n.strip()))
        return {name: get_metric(name) for name in wanted}, True
    found = {name: reg.item for name, reg in sorted(get_metrics().items())}
    if not found:
        raise DVError("no metrics are installed", "install dv-metrics, or a plugin that registers metrics")
    return found, False


def _prepare(metric: Metric) -> None:
    # Loading weights up front turns "weights missing" into an error before any work;
    # `prepare` is optional for metric plugins.
    prepare = getattr(metric, "prepare", None)
    if callable(prepare):
        prepare()


def _unmet(cls: type[Metric], has: set[str]) -> list[str]:
    return sorted(need for need in cls.needs if need not in has)


def _device(name: str) -> str:
    from dreamvideo_cli.runtime import pick_device

    return str(pick_device(name))


def _score(metric: Metric, sample: EvalSample, explicit: bool) -> float | str:
    """The metric's value, or why it could not be computed. A metric nobody named (e.g. the
    toy world's, run on a real video) that cannot score this video is skipped; one the user
    asked for is an error, and so are missing weights."""
    try:
        return _finite(metric.score(sample), metric.name)
    except MissingWeightsError:
        raise
    except DVError as exc:
        if explicit:
            raise
        return f"could not be scored: {exc}"


def _finite(value: float, metric: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise DVError(f"metric {metric} returned {number}", "report this to the metric's plugin")
    return number


# ---------------------------------------------------------------- scoring videos


@dataclass
class VideoScores:
    """The scores of one video, and what was scored against."""

    video: str
    prompt: str | None  # the text scored against, placeholders replaced
    subject: str | None  # the subject whose reference photos were used
    subject_digest: str | None = None  # which version of it, whatever its tags say now
    scores: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def expand_videos(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders become the videos directly in them."""
    videos: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in media.VIDEO_SUFFIXES and p.is_file() and not p.name.startswith("."))
            if not found:
                raise DVError(f"no videos in {path}", "pass video files, or a folder that holds some")
            videos.extend(found)
        elif path.is_file():
            videos.append(path)
        else:
            raise DVError(f"video {path} does not exist", "check the path")
    if not videos:
        raise DVError("no videos to score", "pass video files or folders")
    return videos


@dataclass
class _Plan:
    """What one video will be scored against, worked out before any frame is decoded."""

    video: Path
    prompt: str | None
    subject: Any
    metadata: dict[str, Any]
    skipped: dict[str, str]


def _warn_skipped(plans: list[_Plan], on_event: EventHandler) -> None:
    """One warning per metric and reason, naming a few of the videos."""
    groups: dict[tuple[str, str], list[str]] = {}
    for plan in plans:
        for name, reason in plan.skipped.items():
            groups.setdefault((name, reason), []).append(plan.video.name)
    for (name, reason), names in groups.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        on_event(Note(f"{name} skipped for {shown}: {reason}", "warning"))


def evaluate_videos(
    videos: Sequence[str | os.PathLike[str]],
    *,
    registry: Any,
    subject: str | None = None,
    prompt: str | None = None,
    metrics: Sequence[str] | None = None,
    device: str = "auto",
    on_event: EventHandler = ignore_events,
) -> list[VideoScores]:
    """Score each video with each metric; see the module docstring for the defaults."""
    classes, explicit = _metric_classes(metrics)
    paths = expand_videos(videos)
    explicit_subject = _resolve_subject(registry, subject) if subject else None

    plans: list[_Plan] = []
    for path in paths:
        metadata = media.read_video_metadata(path) or {}
        recorded = metadata.get("subject") if isinstance(metadata.get("subject"), dict) else None
        manifest, why_no_subject = explicit_subject, None
        if manifest is None and recorded:
            manifest, why_no_subject = _subject_from_metadata(registry, recorded)
        text = prompt if prompt is not None else metadata.get("prompt")
        if isinstance(text, str) and text.strip():
            token = manifest.token if manifest is not None else (recorded or {}).get("token")
            init_word = manifest.init_word if manifest is not None else (recorded or {}).get("init_word")
            text = eval_prompt(text, token, init_word)
        else:
            text = None
        has = {"prompt"} if text else set()
        if manifest is not None:
            has.add("reference_images")
        skipped: dict[str, str] = {}
        for name, cls in classes.items():
            unmet = _unmet(cls, has)
            if not unmet:
                continue
            what = " and ".join(_NEED_WORDS.get(n, n) for n in unmet)
            reason = f"needs {what}" + (f" ({why_no_subject})" if why_no_subject and "reference_images" in unmet else "")
            if explicit:
                hints = ", ".join(_NEED_HINTS.get(n, f"give it {n}") for n in unmet)
                raise DVError(f"metric {name} {reason}, which {path} does not have", hints)
            skipped[name] = reason
        plans.append(_Plan(path, text, manifest, metadata, skipped))
    _warn_skipped(plans, on_event)

    device_name = _device(device)
    needed = [name for name in classes if any(name not in plan.skipped for plan in plans)]
    instances = {name: classes[name](device_name) for name in needed}
    for metric in instances.values():
        _prepare(metric)

    references: dict[str, list[npt.NDArray[np.uint8]]] = {}
    results: list[VideoScores] = []
    on_event(StageStarted("eval", len(plans), f"{len(plans)} video(s), metrics: {', '.join(needed) or 'none'}"))
    for step, plan in enumerate(plans, start=1):
        refs: list[npt.NDArray[np.uint8]] = []
        if plan.subject is not None and any("reference_images" in classes[n].needs for n in instances):
            if plan.subject.digest not in references:
                references[plan.subject.digest] = _reference_arrays(registry, plan.subject)
            refs = references[plan.subject.digest]
        sample = EvalSample(media.read_frames(plan.video, None), plan.prompt, refs, {"metadata": plan.metadata, "video": str(plan.video)})
        scores: dict[str, float] = {}
        for name, metric in instances.items():
            if name in plan.skipped:
                continue
            outcome = _score(metric, sample, explicit)
            if isinstance(outcome, str):
                plan.skipped[name] = outcome
                on_event(Note(f"{name} skipped for {plan.video.name}: {outcome}", "warning"))
            else:
                scores[name] = outcome
        subject_ref = plan.subject.ref if plan.subject is not None else None
        subject_digest = plan.subject.digest if plan.subject is not None else None
        results.append(VideoScores(str(plan.video), plan.prompt, subject_ref, subject_digest, scores, plan.skipped))
        on_event(StepDone("eval", step, len(plans)))
    on_event(StageFinished("eval"))
    return results


# ---------------------------------------------------------------- grids


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


@dataclass(frozen=True)
class GridCell:
    id: str
    subject: str
    motion: str
    prompt_index: int
    prompt: str
    seed: int


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


def grid_cells(spec: GridSpec) -> list[GridCell]:
    """The cells in a fixed order: subject, then motion, then prompt, then seed."""
    cells = []
    for subject in spec.subjects:
        for motion in spec.motions:
            for index, prompt in enumerate(spec.prompts):
                for seed in spec.seeds:
                    cell_id = f"{_slug(subject)}--{_slug(motion)}--p{index:03d}--s{seed}"
                    cells.append(GridCell(cell_id, subject, motion, index, prompt, seed))
    return cells


def _check_spec(spec: GridSpec) -> None:
    if not spec.subjects or not spec.motions:
        raise DVError("a grid needs subjects and motions", "pass --subjects A,B and --motions X,Y (- for none)")
    if not spec.prompts:
        raise DVError("a grid needs prompts", "pass --prompts FILE")
    if not spec.seeds:
        raise DVError("a grid needs at least one seed", "pass --seeds N with N >= 1")
    if any(s == "-" for s in spec.subjects) and any(m == "-" for m in spec.motions):
        raise DVError("a cell needs a subject, a motion, or both", "use - in --subjects or in --motions, not both")
    for kind, refs in (("subject", spec.subjects), ("motion", spec.motions)):
        slugs = [_slug(ref) for ref in refs]
        twice = sorted({slug for slug in slugs if slugs.count(slug) > 1})
        if twice:
            # Cell files are named after the refs, so two refs with one name would collide.
            raise DVError(f"the {kind}s of the grid repeat {', '.join(twice)}", "list each once")


def _resolve_refs(registry: Any, refs: Iterable[str], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ref in refs:
        if ref == "-":
            found[ref] = None
            continue
        manifest = registry.resolve(ref)
        if manifest.kind != kind:
            raise DVError(f"{ref!r} is a {manifest.kind}, not a {kind}", f"--{kind}s takes {kind}s from `dv list`")
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


def _write_atomic(path: Path, text: str) -> None:
    """Write `path` so that readers (other processes, a re-run) see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _grid_state(device: str) -> Any:
    """accelerate's process state; on a CPU it must be asked for explicitly, or each process
    of `accelerate launch --multi_gpu` would think it is alone."""
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return PartialState(cpu=cpu)


def _process_device(requested: str, state: Any) -> str:
    if requested in ("auto", "cuda") and state.device.type == "cuda":
        return str(state.device)  # this process's own GPU (cuda:LOCAL_RANK)
    if requested == "auto":
        return "cpu"
    return requested


def _metric_plan(classes: dict[str, type[Metric]], has_subject: bool) -> dict[str, str]:
    """metric -> why it cannot be computed for a cell (a grid cell always has a prompt)."""
    has = {"prompt", "reference_images"} if has_subject else {"prompt"}
    return {
        name: "needs " + " and ".join(_NEED_WORDS.get(n, n) for n in unmet) + " (no subject in this cell)"
        for name, cls in classes.items()
        if (unmet := _unmet(cls, has))
    }


def run_grid(spec: GridSpec, *, registry: Any, on_event: EventHandler = ignore_events) -> GridResult:
    """Compose and score every cell of the grid; see the module docstring."""
    from dreamvideo_cli.compose import LoadedBackbone, compose

    _check_spec(spec)
    classes, explicit = _metric_classes(spec.metrics)
    metric_names = list(classes)
    if explicit:
        for name, cls in classes.items():
            if "reference_images" in cls.needs and all(s == "-" for s in spec.subjects):
                raise DVError(f"metric {name} needs a subject, and this grid has none", "pass --subjects")
    from dreamvideo_cli.plugins import get_sampler

    if spec.compose.sampler:
        get_sampler(spec.compose.sampler)  # a typo should fail once, not once per cell
    subjects = _resolve_refs(registry, spec.subjects, "subject")
    motions = _resolve_refs(registry, spec.motions, "motion")
    cells = grid_cells(spec)
    output = Path(spec.output)
    cell_dir = output / "cells"
    settings = _compose_settings(spec.compose)

    def compose_key(cell: GridCell) -> str:
        subject, motion = subjects[cell.subject], motions[cell.motion]
        return _digest(
            {
                "subject": subject.digest if subject is not None else None,
                "motion": motion.digest if motion is not None else None,
                "prompt": cell.prompt,
                "seed": cell.seed,
                "compose": settings,
            }
        )

    keys = {cell.id: compose_key(cell) for cell in cells}

    def status(cell: GridCell) -> tuple[str, dict[str, Any] | None]:
        """'done', 'rescore' (the video is fine, some score is missing) or 'compose'."""
        found = _read_json(cell_dir / f"{cell.id}.result.json")
        if found is None or found.get("key") != keys[cell.id] or not (cell_dir / f"{cell.id}.mp4").is_file():
            return "compose", None
        if found.get("status") == "ok":
            have = set(found.get("scores", {})) | set(found.get("skipped", {}))
            return ("done" if set(metric_names) <= have else "rescore"), found
        if found.get("final_prompt"):  # composed, then scoring failed: score it again
            return "rescore", {**found, "scores": {}, "skipped": {}}
        return "compose", None

    state = _grid_state(spec.compose.device)
    rank, world = int(state.process_index), int(state.num_processes)
    device = _process_device(spec.compose.device, state)
    metric_device = _process_device(spec.metric_device, state) if spec.metric_device else device
    compose_config = dataclasses.replace(spec.compose, device=device)

    statuses = {cell.id: status(cell) for cell in cells}
    pending = [cell for cell in cells if statuses[cell.id][0] != "done"]
    resumed = len(cells) - len(pending)
    needed_metrics = [
        name for name in metric_names
        if any(name not in _metric_plan(classes, subjects[c.subject] is not None) for c in pending)
    ]
    instances = {name: classes[name](metric_device) for name in needed_metrics}
    # Every process loads the metric weights before anyone composes, so a missing download
    # stops all of them at once instead of after the first cell.
    for metric in instances.values():
        _prepare(metric)
    # Everyone must have read the same pending list before anyone writes a result.
    state.wait_for_everyone()
    mine = pending[rank::world]
    if state.is_main_process:
        on_event(
            Note(
                f"grid: {len(cells)} cells ({len(spec.subjects)} subject(s) x {len(spec.motions)} motion(s) x "
                f"{len(spec.prompts)} prompt(s) x {len(spec.seeds)} seed(s)), {resumed} already done"
                + (f", split over {world} processes" if world > 1 else "")
            )
        )
        if explicit:
            blank = sorted({n for c in cells for n in _metric_plan(classes, subjects[c.subject] is not None)})
            if blank:
                on_event(Note(f"{', '.join(blank)} left blank for cells without a subject", "warning"))

    references: dict[str, list[npt.NDArray[np.uint8]]] = {}

    def forward(event: Any) -> None:
        # A grid shows one bar for its cells, not one per sampling run; keep warnings.
        if isinstance(event, Note) and event.level == "warning":
            on_event(event)

    composed = rescored = 0
    loaded = LoadedBackbone()  # every cell of a grid shares one backbone: load it once
    on_event(StageStarted("grid", len(mine), "composing and scoring" + (f" on process {rank + 1}/{world}" if world > 1 else "")))
    for step, cell in enumerate(mine, start=1):
        kind, previous = statuses[cell.id]
        video = cell_dir / f"{cell.id}.mp4"
        cell_result: dict[str, Any] = {
            "id": cell.id,
            "key": keys[cell.id],
            "subject": cell.subject,
            "subject_digest": subjects[cell.subject].digest if subjects[cell.subject] is not None else None,
            "motion": cell.motion,
            "motion_digest": motions[cell.motion].digest if motions[cell.motion] is not None else None,
            "prompt_index": cell.prompt_index,
            "prompt": cell.prompt,
            "seed": cell.seed,
            "video": f"cells/{video.name}",
            "contact_sheet": f"cells/{video.with_suffix('.png').name}",
            "process": rank,  # which process made it (not in results.json, which must not depend on it)
        }
        final_prompt: str | None = None
        seconds: Any = None
        try:
            if kind == "compose":
                cell_dir.mkdir(parents=True, exist_ok=True)
                config = dataclasses.replace(compose_config, seed=cell.seed)
                composed_result = compose(
                    cell.subject, cell.motion, cell.prompt, video, config, registry=registry, on_event=forward, loaded=loaded
                )
                final_prompt, seconds = composed_result.prompt, composed_result.metadata.get("seconds")
                scores: dict[str, float | None] = {}
                skipped: dict[str, str] = {}
                composed += 1
            else:
                assert previous is not None
                final_prompt, seconds = previous["final_prompt"], previous.get("seconds")
                scores, skipped = dict(previous.get("scores", {})), dict(previous.get("skipped", {}))
                rescored += 1
            subject = subjects[cell.subject]
            text = eval_prompt(final_prompt, subject.token if subject else None, subject.init_word if subject else None)
            unmet = _metric_plan(classes, subject is not None)
            todo = [n for n in metric_names if n not in scores and n not in skipped]
            for name in todo:
                if name in unmet:
                    skipped[name] = unmet[name]
            to_score = [n for n in todo if n not in unmet]
            if to_score:
                refs: list[npt.NDArray[np.uint8]] = []
                if subject is not None and any("reference_images" in classes[n].needs for n in to_score):
                    if subject.digest not in references:
                        references[subject.digest] = _reference_arrays(registry, subject)
                    refs = references[subject.digest]
                metadata = media.read_video_metadata(video) or {}
                sample = EvalSample(media.read_frames(video, None), text, refs, {"metadata": metadata, "video": str(video)})
                for name in to_score:
                    outcome = _score(instances[name], sample, explicit)
                    if isinstance(outcome, str):
                        skipped[name] = outcome
                    else:
                        scores[name] = outcome
            cell_result.update(
                status="ok", final_prompt=final_prompt, eval_prompt=text, scores=scores, skipped=skipped,
                seconds=seconds, error=None,
            )
        except (Interrupted, MissingWeightsError, KeyboardInterrupt):
            raise
        except Exception as exc:  # one bad cell must not end a grid of thousands
            message = str(exc) if isinstance(exc, DVError) else f"{type(exc).__name__}: {exc}"
            cell_result.update(status="failed", error=message, final_prompt=final_prompt, seconds=seconds, scores={}, skipped={})
            on_event(Note(f"cell {cell.id} failed: {message}", "warning"))
        _write_atomic(cell_dir / f"{cell.id}.result.json", json.dumps(cell_result, indent=2, sort_keys=True) + "\n")
        on_event(StepDone("grid", step, len(mine)))
    on_event(StageFinished("grid"))

    # Every result file is on disk before process 0 reads them.
    state.wait_for_everyone()
    result = GridResult(output, bool(state.is_main_process), rank, world, metric_names, [], {}, {}, composed, rescored, resumed, [])
    if not state.is_main_process:
        return result
    merged = []
    for cell in cells:
        found = _read_json(cell_dir / f"{cell.id}.result.json")
        if found is None or found.get("key") != keys[cell.id]:
            found = {"id": cell.id, "subject": cell.subject, "motion": cell.motion, "prompt_index": cell.prompt_index,
                     "prompt": cell.prompt, "seed": cell.seed, "status": "missing", "error": "no result was written", "scores": {}, "skipped": {}}
        merged.append(_public_cell(found, metric_names))
    result.cells = merged
    result.failed = [c["id"] for c in merged if c["status"] != "ok"]
    result.summary = summarize(merged, metric_names)
    result.files = _write_grid_outputs(output, spec, settings, metric_names, merged, result.summary, on_event)
    return result


_PUBLIC_FIELDS = (
    "id", "subject", "subject_digest", "motion", "motion_digest", "prompt_index", "prompt", "seed",
    "final_prompt", "eval_prompt", "video", "contact_sheet", "status", "error",
)


def _public_cell(found: dict[str, Any], metric_names: list[str]) -> dict[str, Any]:
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


def _write_grid_outputs(
    output: Path,
    spec: GridSpec,
    settings: dict[str, Any],
    metric_names: list[str],
    cells: list[dict[str, Any]],
    summary: dict[str, Any],
    on_event: EventHandler,
) -> dict[str, Path]:
    files: dict[str, Path] = {}
    document = {
        "grid": {
            "subjects": spec.subjects,
            "motions": spec.motions,
            "prompts": spec.prompts,
            "seeds": spec.seeds,
            "compose": settings,
        },
        "metrics": metric_names,
        "cells": cells,
    }
    files["results_json"] = output / "results.json"
    _write_atomic(files["results_json"], json.dumps(document, indent=2, sort_keys=True) + "\n")

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["id", "subject", "motion", "prompt", "seed", "final_prompt", "eval_prompt", "status"]
    writer.writerow([*columns, *metric_names, "video", "error"])
    for cell in cells:
        values = [cell.get(c) for c in columns]
        metrics = [("" if cell["scores"].get(n) is None else repr(float(cell["scores"][n]))) for n in metric_names]
        writer.writerow([("" if v is None else v) for v in values] + metrics + [cell.get("video") or "", cell.get("error") or ""])
    files["results_csv"] = output / "results.csv"
    _write_atomic(files["results_csv"], buffer.getvalue())

    files["summary"] = output / "summary.json"
    _write_atomic(files["summary"], json.dumps(summary, indent=2, sort_keys=True) + "\n")

    on_event(StageStarted("sheet", len(cells), "contact sheet of the grid"))
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
    from PIL import Image, ImageDraw, ImageFont

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
    return lines + [f"{name} {scores[name]:.3f}" if scores.get(name) is not None else f"{name} -" for name in metric_names]


def _row_tiles(video: Path, ok: bool, thumb: int) -> list[Image.Image]:
    """Evenly spaced frames of a cell's video, each fitted into a thumb x thumb square."""
    from PIL import Image, ImageOps

    if not ok or not video.is_file():
        return []
    try:
        frames = media.read_frames(video, None)
    except DVError:
        return []
    picks = np.unique(np.round(np.linspace(0, len(frames) - 1, min(FRAMES_PER_ROW, len(frames)))).astype(int))
    return [ImageOps.pad(Image.fromarray(frames[i]), (thumb, thumb), color=(255, 255, 255)) for i in picks]
