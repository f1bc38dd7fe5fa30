"""Scoring videos with the installed metrics.

`evaluate_videos` scores finished videos: the prompt and the subject default to what
`compose` recorded in each video's metadata, placeholder tokens (`<dog>`) become the
subject's init word before text alignment is scored (the authors scored "a dog eating
pizza", not the learned token), and a metric whose inputs are missing is skipped with a
warning, or is an error when it was asked for by name.

The helpers that pick and run metrics (`metric_classes`, `score_sample`, ...) are shared
with evaluation grids (`dreamvideo_cli.grid`) and sweeps.

The engine never prints: it emits `dreamvideo_cli.events`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamvideo_cli import media, plugins
from dreamvideo_cli.errors import DVError, MissingWeightsError
from dreamvideo_cli.events import (
    EventHandler,
    Note,
    StageFinished,
    StageStarted,
    StepDone,
    ignore_events,
)
from dreamvideo_cli.metrics import EvalSample, Metric
from dreamvideo_cli.registry_entries import reference_images
from dreamvideo_cli.runtime import pick_device
from dv_registry import RegistryError

if TYPE_CHECKING:
    import numpy.typing as npt

    from dv_registry import Manifest, Registry

__all__ = [
    "NEED_WORDS",
    "VideoScores",
    "eval_prompt",
    "evaluate_videos",
    "expand_videos",
    "incomplete",
    "metric_classes",
    "reference_arrays",
    "score_sample",
    "unmet_needs",
]

_PLACEHOLDER = re.compile(r"<([A-Za-z0-9][A-Za-z0-9_.\-]*)>")
NEED_WORDS = {"prompt": "a prompt", "reference_images": "a subject's reference photos", "motion": "a learnt motion"}
_NEED_HINTS = {
    "prompt": "pass --prompt",
    "reference_images": "pass --subject",
    "motion": "score a video composed with a motion",
}


# ---------------------------------------------------------------- prompts and subjects


def eval_prompt(prompt: str, token: str | None = None, init_word: str | None = None) -> str:
    """The text a video is scored against: the subject's token becomes its init word, and
    any other `<name>` placeholder becomes `name`."""
    text = prompt
    if token and init_word:
        text = text.replace(token, init_word)
    text = _PLACEHOLDER.sub(lambda m: m.group(1), text)
    return " ".join(text.split())


def _subject_from_metadata(registry: Registry, recorded: dict[str, Any]) -> tuple[Manifest | None, str | None]:
    """The recorded subject's manifest, by digest first (tags move), else by its ref."""
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


def _resolve_subject(registry: Registry, ref: str) -> Manifest:
    manifest = registry.resolve(ref)
    if manifest.kind != "subject":
        raise DVError(f"{ref!r} is a {manifest.kind}, not a subject", "--subject takes a subject from `dv list`")
    return manifest


def reference_arrays(registry: Registry, manifest: Manifest) -> list[npt.NDArray[np.uint8]]:
    """The subject's reference photos, as RGB arrays."""
    return [np.asarray(image.convert("RGB"), dtype=np.uint8) for image in reference_images(registry, manifest)]


# ---------------------------------------------------------------- metrics


def metric_classes(names: Sequence[str] | None) -> tuple[dict[str, type[Metric]], bool]:
    """The metrics to compute, and whether the user named them (then missing inputs are errors)."""
    if names:
        wanted = list(dict.fromkeys(n.strip() for name in names for n in name.split(",") if n.strip()))
        return {name: plugins.get_metric(name) for name in wanted}, True
    found = {name: reg.item for name, reg in sorted(plugins.get_metrics().items())}
    if not found:
        raise DVError("no metrics are installed", "install dv-metrics, or a plugin that registers metrics")
    return found, False


def unmet_needs(cls: type[Metric], has: set[str]) -> list[str]:
    """What the metric needs (`Metric.needs`) that is not in `has`."""
    return sorted(need for need in cls.needs if need not in has)


def _device(name: str) -> str:
    return str(pick_device(name))


def score_sample(metric: Metric, sample: EvalSample, explicit: bool) -> float | str:
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
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why it does not apply to this video
    failed: dict[str, str] = field(default_factory=dict)  # metric -> why it could not score this video
    error: str | None = None  # why the video could not be read (then nothing was scored)
    weights_missing: list[str] = field(default_factory=list)  # metrics in `failed` for want of weights

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def incomplete(results: Sequence[VideoScores]) -> DVError | None:
    """The error to end with after showing `results` when something could not be scored (a
    video that cannot be read, a metric without its weights or that failed); None when all
    was scored. Metrics that do not apply to a video (`skipped`) are not failures."""
    bad = [r for r in results if r.error or r.failed]
    if not bad:
        return None
    counted = f"{len(bad)} of {len(results)} video(s) not fully scored"
    weights = sorted({name for r in results for name in r.weights_missing})
    if weights:  # the weights' own message names what to fetch and how
        reason = next(r.failed[name] for r in results for name in r.weights_missing)
        return MissingWeightsError(f"{counted}: no weights for {', '.join(weights)}: {reason}")
    first = bad[0]
    why = first.error or next(f"{name}: {reason}" for name, reason in first.failed.items())
    return DVError(f"{counted} (first: {Path(first.video).name}, {why})", "the other scores are above")


def expand_videos(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders become the videos directly in them."""
    videos: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in media.VIDEO_SUFFIXES and p.is_file() and not p.name.startswith(".")
            )
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
    subject: Manifest | None
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
    registry: Registry,
    subject: str | None = None,
    prompt: str | None = None,
    metrics: Sequence[str] | None = None,
    device: str = "auto",
    on_event: EventHandler = ignore_events,
) -> list[VideoScores]:
    """Score each video with each metric; see the module docstring for the defaults."""
    classes, explicit = metric_classes(metrics)
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
        if isinstance(metadata.get("motion"), dict):
            has.add("motion")
        skipped: dict[str, str] = {}
        for name, cls in classes.items():
            unmet = unmet_needs(cls, has)
            if not unmet:
                continue
            what = " and ".join(NEED_WORDS.get(n, n) for n in unmet)
            reason = f"needs {what}" + (
                f" ({why_no_subject})" if why_no_subject and "reference_images" in unmet else ""
            )
            if explicit:
                hints = ", ".join(_NEED_HINTS.get(n, f"give it {n}") for n in unmet)
                raise DVError(f"metric {name} {reason}, which {path} does not have", hints)
            skipped[name] = reason
        plans.append(_Plan(path, text, manifest, metadata, skipped))
    _warn_skipped(plans, on_event)

    device_name = _device(device)
    needed = [name for name in classes if any(name not in plan.skipped for plan in plans)]
    instances = {name: classes[name](device_name) for name in needed}
    unprepared: dict[str, str] = {}  # metric -> why its weights are missing
    for name, metric in list(instances.items()):
        try:
            metric.prepare()  # missing weights show here, before any video is decoded
        except MissingWeightsError as exc:
            unprepared[name] = str(exc)
            del instances[name]
    for reason in dict.fromkeys(unprepared.values()):  # metrics sharing weights: one line
        names = ", ".join(name for name, why in unprepared.items() if why == reason)
        on_event(Note(f"{names} not scored: {reason}", "warning"))

    references: dict[str, list[npt.NDArray[np.uint8]]] = {}
    results: list[VideoScores] = []
    on_event(StageStarted("eval", len(plans), f"scoring with {', '.join(needed) or 'no metric'}", unit="video"))
    for step, plan in enumerate(plans, start=1):
        refs: list[npt.NDArray[np.uint8]] = []
        if plan.subject is not None and any("reference_images" in classes[n].needs for n in instances):
            if plan.subject.digest not in references:
                references[plan.subject.digest] = reference_arrays(registry, plan.subject)
            refs = references[plan.subject.digest]
        subject_ref = plan.subject.ref if plan.subject is not None else None
        subject_digest = plan.subject.digest if plan.subject is not None else None
        scored = VideoScores(str(plan.video), plan.prompt, subject_ref, subject_digest, skipped=plan.skipped)
        results.append(scored)
        for name, reason in unprepared.items():
            if name not in plan.skipped:
                scored.failed[name] = reason
                scored.weights_missing.append(name)
        try:
            frames = media.read_frames(plan.video, None)
        except Exception as exc:  # one video that cannot be read must not end the others' scoring
            scored.error = _reason(exc)
            on_event(Note(f"{plan.video.name} not scored: {scored.error}", "warning"))
            on_event(StepDone("eval", step, len(plans)))
            continue
        sample = EvalSample(frames, plan.prompt, refs, {"metadata": plan.metadata, "video": str(plan.video)})
        for name, metric in instances.items():
            if name not in plan.skipped:
                _score_into(scored, name, metric, sample, explicit, on_event)
        on_event(StepDone("eval", step, len(plans)))
    on_event(StageFinished("eval"))
    return results


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, DVError) else f"{type(exc).__name__}: {exc}"


def _score_into(
    scored: VideoScores, name: str, metric: Metric, sample: EvalSample, explicit: bool, on_event: EventHandler
) -> None:
    """One metric on one video: its score, or why it does not apply (`skipped`), or why it
    failed (`failed`: the metric was asked for by name, its weights are missing, or it broke)."""
    video = Path(scored.video).name
    try:
        outcome = score_sample(metric, sample, explicit)
    except Exception as exc:  # one metric failing on one video must not end the others
        scored.failed[name] = _reason(exc)
        if isinstance(exc, MissingWeightsError):
            scored.weights_missing.append(name)
        on_event(Note(f"{name} not scored for {video}: {scored.failed[name]}", "warning"))
        return
    if isinstance(outcome, str):
        scored.skipped[name] = outcome
        on_event(Note(f"{name} skipped for {video}: {outcome}", "warning"))
    else:
        scored.scores[name] = outcome
