"""Running one cell of a grid: compose it (unless its video is already there), score the
metrics it lacks, and write its result file.

`start_runner` gives each process a CellRunner: its own device (`cuda:LOCAL_RANK` under
accelerate), the metrics its pending cells need (their weights loaded up front), one loaded
backbone that all its cells share, and a cache of reference photos. `run_cell` runs one cell;
a failure (CUDA out of memory, a metric that cannot score it) is recorded in the cell's
result, not raised, so one bad cell does not end a grid of thousands.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamvideo_cli import composition, media
from dreamvideo_cli.errors import DVError, Interrupted, MissingWeightsError
from dreamvideo_cli.evaluate import eval_prompt, reference_arrays, score_sample
from dreamvideo_cli.events import EventHandler, Note
from dreamvideo_cli.grid.plan import GridCell, GridPlan
from dreamvideo_cli.metrics import EvalSample, Metric

if TYPE_CHECKING:
    import numpy.typing as npt
    from accelerate import PartialState

    from dv_registry import Manifest, Registry

__all__ = ["CellRunner", "run_cell", "start_runner"]


@dataclass
class CellRunner:
    """One process's means to run cells: its compose settings (its own device), its metrics,
    one backbone that every cell shares, and the reference photos it has read."""

    registry: Registry
    rank: int
    compose_config: composition.ComposeConfig
    metrics: dict[str, Metric]
    loaded: composition.BackboneCache
    on_event: EventHandler
    references: dict[str, list[npt.NDArray[np.uint8]]] = field(default_factory=dict)

    def compose(self, cell: GridCell, video: Path) -> tuple[str, Any]:
        """Compose the cell into `video`; returns the final prompt and the seconds it took."""
        config = dataclasses.replace(self.compose_config, seed=cell.seed)
        if cell.subject_scale is not None:  # a grid sweeping scales: the cell's own
            config = dataclasses.replace(config, subject_scale=cell.subject_scale)
        if cell.motion_scale is not None:
            config = dataclasses.replace(config, motion_scale=cell.motion_scale)
        # Looked up on the module at each call, so tests can count calls.
        result = composition.compose(
            cell.subject, cell.motion, cell.prompt, video, config,
            registry=self.registry, on_event=self._forward, cache=self.loaded,
        )  # fmt: skip
        return result.prompt, result.metadata.get("seconds")

    def reference_photos(self, subject: Manifest) -> list[npt.NDArray[np.uint8]]:
        if subject.digest not in self.references:
            self.references[subject.digest] = reference_arrays(self.registry, subject)
        return self.references[subject.digest]

    def _forward(self, event: Any) -> None:
        # A grid shows one bar for its cells, not one per sampling run; keep warnings.
        if isinstance(event, Note) and event.level == "warning":
            self.on_event(event)


def start_runner(
    plan: GridPlan, registry: Registry, pending: list[GridCell], state: PartialState, on_event: EventHandler
) -> CellRunner:
    """This process's runner: its devices, and the metrics some pending cell needs, loaded."""
    device = _process_device(plan.spec.compose.device, state)
    metric_device = _process_device(plan.spec.metric_device, state) if plan.spec.metric_device else device
    needed = [name for name in plan.metrics if any(name not in plan.blank_metrics(c) for c in pending)]
    metrics = {name: plan.metrics[name](metric_device) for name in needed}
    # Every process loads the metric weights before anyone composes, so a missing download
    # stops all of them at once instead of after the first cell.
    for metric in metrics.values():
        metric.prepare()
    config = dataclasses.replace(plan.spec.compose, device=device)
    return CellRunner(registry, int(state.process_index), config, metrics, composition.BackboneCache(), on_event)


def run_cell(plan: GridPlan, cell: GridCell, previous: dict[str, Any] | None, runner: CellRunner) -> dict[str, Any]:
    """Compose the cell (unless `previous`, its result so far, says its video is fine), score
    each metric it lacks, and write its result file. A failure is recorded, not raised."""
    video = plan.video(cell)
    subject, motion = plan.subjects[cell.subject], plan.motions[cell.motion]
    result: dict[str, Any] = {
        "id": cell.id,
        "key": plan.keys[cell.id],
        "subject": cell.subject,
        "subject_digest": subject.digest if subject is not None else None,
        "motion": cell.motion,
        "motion_digest": motion.digest if motion is not None else None,
        "prompt_index": cell.prompt_index,
        "prompt": cell.prompt,
        "seed": cell.seed,
        "subject_scale": cell.subject_scale if cell.subject_scale is not None else plan.spec.compose.subject_scale,
        "motion_scale": cell.motion_scale if cell.motion_scale is not None else plan.spec.compose.motion_scale,
        "video": f"cells/{video.name}",
        "contact_sheet": f"cells/{video.with_suffix('.png').name}",
        "process": runner.rank,  # which process made it (not in results.json, which must not depend on it)
    }
    final_prompt: str | None = None
    seconds: Any = None
    try:
        if previous is None:
            video.parent.mkdir(parents=True, exist_ok=True)
            final_prompt, seconds = runner.compose(cell, video)
            scores: dict[str, float | None] = {}
            skipped: dict[str, str] = {}
        else:
            final_prompt, seconds = previous["final_prompt"], previous.get("seconds")
            scores, skipped = dict(previous.get("scores", {})), dict(previous.get("skipped", {}))
        assert final_prompt is not None
        text = eval_prompt(final_prompt, subject.token if subject else None, subject.init_word if subject else None)
        _score_cell(plan, cell, video, text, runner, scores, skipped)
        result.update(
            status="ok", final_prompt=final_prompt, eval_prompt=text, scores=scores, skipped=skipped,
            seconds=seconds, error=None,
        )  # fmt: skip
    except (Interrupted, MissingWeightsError, KeyboardInterrupt):
        raise
    except Exception as exc:  # one bad cell must not end a grid of thousands
        message = str(exc) if isinstance(exc, DVError) else f"{type(exc).__name__}: {exc}"
        result.update(status="failed", error=message, final_prompt=final_prompt, seconds=seconds, scores={}, skipped={})
        runner.on_event(Note(f"cell {cell.id} failed: {message}", "warning"))
    plan.write_result(cell, result)
    return result


def _score_cell(
    plan: GridPlan, cell: GridCell, video: Path, text: str, runner: CellRunner,
    scores: dict[str, float | None], skipped: dict[str, str],
) -> None:  # fmt: skip
    """Fill in `scores` and `skipped` for every metric the cell has neither for."""
    blank = plan.blank_metrics(cell)
    todo = [n for n in plan.metric_names if n not in scores and n not in skipped]
    skipped.update({name: blank[name] for name in todo if name in blank})
    to_score = [n for n in todo if n not in blank]
    if not to_score:
        return
    subject = plan.subjects[cell.subject]
    refs: list[npt.NDArray[np.uint8]] = []
    if subject is not None and any("reference_images" in plan.metrics[n].needs for n in to_score):
        refs = runner.reference_photos(subject)
    metadata = media.read_video_metadata(video) or {}
    sample = EvalSample(media.read_frames(video, None), text, refs, {"metadata": metadata, "video": str(video)})
    for name in to_score:
        outcome = score_sample(runner.metrics[name], sample, plan.explicit)
        if isinstance(outcome, str):
            skipped[name] = outcome
        else:
            scores[name] = outcome


def _process_device(requested: str, state: PartialState) -> str:
    if requested in ("auto", "cuda") and state.device.type == "cuda":
        return str(state.device)  # this process's own GPU (cuda:LOCAL_RANK)
    if requested == "auto":
        return "cpu"
    return requested
