"""Training runs on disk: what each is, how much room it takes, and freeing that room.

A run (`dreamvideo_cli.learn.run_folder.Run`) lives in `$DV_HOME/runs/<id>/`: `config.json`,
`loss.csv`, `loss.png`, and `checkpoints/` with `state.json`, the `state-<stage>-<step>.safetensors`
it points at (the adapter, the token, the random generators and the optimizer's moments:
most of a run's size, about 0.9 GB for a ModelScope motion run) and the intermediate
adapters `adapter-step<K>.safetensors`.

The resumable state is `state.json` plus its tensors: `--resume` needs both, and a run
without `state.json` cannot be resumed (`Run.open` refuses it). So every removal here takes
`state.json` away first: a crash half-way leaves a run that is plainly not resumable, never
one that looks resumable and fails to load.

A run is *finished* when its state says so (subject: stage `done`; motion: step equal to the
configured steps) or, once its state is gone, when its loss log reached the last step.
`prune` frees the state of finished runs whose result the registry holds (a manifest
records the run's id); a finished run whose result is not stored keeps its state, because
resuming it stores the result. Nothing that could still be resumed is removed except by
`remove`, which the user calls with the run's id.

This module imports neither torch nor the learning code, so `dv runs` and `dv du` stay quick.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.run_layout import STAGES, STATE_JSON, STEPS_FIELD, Stage, runs_folder
from dv_registry.fsutil import is_tmp_name, read_json_object

__all__ = [
    "PrunedRun",
    "RunInfo",
    "RunsUsage",
    "find_runs",
    "list_runs",
    "prune_runs",
    "remove_runs",
    "resolve_ids",
    "runs_folder",
    "runs_usage",
    "stored_runs",
]

Status = Literal["finished", "resumable", "incomplete", "unreadable"]

# A folder being removed is renamed to this prefix first; leftovers are cleaned by prune.
_TRASH_PREFIX = ".rm-"


@dataclass(frozen=True)
class RunInfo:
    """One run folder as `dv runs list` shows it."""

    id: str
    folder: Path
    kind: str | None  # "subject" or "motion"; None when config.json is unreadable
    name: str | None
    stage: str | None  # the saved state's stage, else the last one in the loss log
    step: int | None
    total: int | None  # steps of that stage, from the run's config
    status: Status
    size: int  # every file in the folder
    state_files: tuple[Path, ...]  # state.json first, then its tensors and stray temporaries
    state_bytes: int
    stored: tuple[str, ...] = ()  # registry refs whose manifest records this run
    started: float | None = None  # when config.json was written (seconds since the epoch)
    last_active: float | None = None  # the newest of the loss log and the saved state
    last_loss: float | None = None  # the loss log's last value

    @property
    def duration(self) -> float | None:
        """Seconds from the start to the last logged loss or saved state (pauses included)."""
        if self.started is None or self.last_active is None:
            return None
        return max(0.0, self.last_active - self.started)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def resumable(self) -> bool:
        """`--resume ID` would continue (or, for a finished run, store) it."""
        return (
            bool(self.state_files)
            and self.state_files[0].name == STATE_JSON
            and self.status in ("finished", "resumable")
        )

    @property
    def prunable(self) -> bool:
        """Finished, its result in the registry, and state still on disk: `prune` frees it."""
        return self.finished and bool(self.stored) and self.state_bytes > 0

    @property
    def progress(self) -> str:
        if self.stage == "done" or self.finished:
            return "done"
        if self.stage is None or self.step is None:
            return "-"
        return f"{self.stage} {self.step}/{self.total}" if self.total is not None else f"{self.stage} {self.step}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "folder": str(self.folder),
            "kind": self.kind,
            "name": self.name,
            "stage": self.stage,
            "step": self.step,
            "total": self.total,
            "status": self.status,
            "finished": self.finished,
            "resumable": self.resumable,
            "stored": list(self.stored),
            "size": self.size,
            "state_bytes": self.state_bytes,
            "prunable": self.prunable,
            "started": _utc(self.started),
            "duration_s": round(self.duration, 1) if self.duration is not None else None,
            "last_loss": self.last_loss,
        }


@dataclass(frozen=True)
class RunsUsage:
    folder: Path
    count: int
    bytes: int  # every file under the runs folder
    prunable_bytes: int  # what `dv runs prune` would free

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "count": self.count,
            "bytes": self.bytes,
            "prunable_bytes": self.prunable_bytes,
        }


@dataclass(frozen=True)
class PrunedRun:
    """What `prune_runs` removed (or would remove) from one run, or a leftover folder."""

    id: str
    files: tuple[str, ...]  # relative to the run's folder
    bytes: int
    leftover: bool = False


@dataclass
class _Sizes:
    total: int = 0
    files: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- reading


def _file_sizes(folder: Path) -> _Sizes:
    sizes = _Sizes()
    for root, _dirs, files in os.walk(folder):
        for filename in files:
            path = Path(root, filename)
            with contextlib.suppress(OSError):
                size = path.lstat().st_size
                sizes.total += size
                sizes.files[path.relative_to(folder).as_posix()] = size
    return sizes


def _last_logged(folder: Path) -> tuple[str, int] | None:
    """The stage and step of the loss log's last row."""
    last = _last_row(folder)
    return (last[0], last[1]) if last is not None else None


def _last_row(folder: Path) -> tuple[str, int, float | None] | None:
    """The stage, step and loss of the loss log's last row."""
    last: tuple[str, int, float | None] | None = None
    with (
        contextlib.suppress(OSError, ValueError, KeyError, csv.Error),
        open(folder / "loss.csv", newline="", encoding="utf-8") as f,
    ):
        for row in csv.DictReader(f):
            try:
                loss: float | None = float(row["loss"])
            except (TypeError, ValueError):
                loss = None
            last = (row["stage"], int(row["step"]), loss)
    return last


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _utc(seconds: float | None) -> str | None:
    """A time in JSON as dv gives it everywhere: UTC with Z."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _stage_total(kind: str | None, stage: str | None, config: dict[str, Any]) -> int | None:
    """The configured step total of the run's stage (a finished subject: its last stage's)."""
    order = STAGES.get(kind or "")
    if order is None or stage is None:
        return None
    at = order[-1] if stage == Stage.DONE else next((s for s in order if s == stage), None)
    value = config.get(STEPS_FIELD[at]) if at is not None else None
    return value if isinstance(value, int) else None


def _is_last_stage(kind: str | None, stage: str | None) -> bool:
    order = STAGES.get(kind or "")
    return order is not None and stage in (order[-1], Stage.DONE)


def _inspect(folder: Path, stored: dict[str, list[str]]) -> RunInfo:
    sizes = _file_sizes(folder)
    saved = read_json_object(folder / "config.json")
    kind = name = None
    config: dict[str, Any] = {}
    if saved is not None:
        kind = saved.get("kind") if isinstance(saved.get("kind"), str) else None
        name = saved.get("name") if isinstance(saved.get("name"), str) else None
        if isinstance(saved.get("config"), dict):
            config = saved["config"]
    checkpoints = folder / "checkpoints"
    state = read_json_object(checkpoints / STATE_JSON)
    stage: str | None = None
    step: int | None = None
    status: Status
    state_names: list[str] = []
    if (checkpoints / STATE_JSON).exists():
        state_names.append(f"checkpoints/{STATE_JSON}")
    state_names += sorted(
        rel
        for rel in sizes.files
        if rel.startswith("checkpoints/") and _is_state_tensors(rel.removeprefix("checkpoints/"))
    )
    if saved is None:
        status = "unreadable"
    elif state is not None:
        stage = state.get("stage") if isinstance(state.get("stage"), str) else None
        raw_step = state.get("step")
        step = raw_step if isinstance(raw_step, int) else None
        tensors = state.get("tensors")
        total = _stage_total(kind, stage, config)
        done = stage == Stage.DONE or (kind == "motion" and step is not None and total is not None and step >= total)
        if not isinstance(tensors, str) or not (checkpoints / tensors).is_file():
            status = "unreadable"  # state.json without the tensors it names: not resumable
        else:
            status = "finished" if done else "resumable"
    else:
        logged = _last_logged(folder)
        if logged is not None:
            stage, step = logged
        total = _stage_total(kind, stage, config)
        done = _is_last_stage(kind, stage) and step is not None and total is not None and step >= total
        status = "finished" if done else "incomplete"
    state_files = tuple(folder / rel for rel in state_names)
    last_row = _last_row(folder)
    active = [t for t in (_mtime(folder / "loss.csv"), _mtime(checkpoints / STATE_JSON)) if t is not None]
    return RunInfo(
        id=folder.name,
        folder=folder,
        kind=kind,
        name=name,
        stage=stage,
        step=step,
        total=_stage_total(kind, stage, config),
        status=status,
        size=sizes.total,
        state_files=state_files,
        state_bytes=sum(sizes.files.get(rel, 0) for rel in state_names),
        stored=tuple(stored.get(folder.name, ())),
        started=_mtime(folder / "config.json"),
        last_active=max(active) if active else None,
        last_loss=last_row[2] if last_row is not None else None,
    )


def _is_state_tensors(filename: str) -> bool:
    """The state's tensors, and temporaries of interrupted atomic writes of any checkpoint file:
    dv_registry.fsutil's (`.tmp-<name>-<pid>-<hex>`), and older versions' (`.state-....tmp`,
    `.adapter-....tmp`, `.state.json.<hex>.tmp`)."""
    if filename.startswith("state-") and filename.endswith(".safetensors"):
        return True
    return is_tmp_name(filename) or (filename.startswith(".") and filename.endswith(".tmp"))


def _run_folders(home: Path) -> Iterator[Path]:
    folder = runs_folder(home)
    with contextlib.suppress(OSError):
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
                yield entry


def _leftovers(home: Path) -> list[Path]:
    folder = runs_folder(home)
    with contextlib.suppress(OSError):
        return sorted(e for e in folder.iterdir() if e.name.startswith(_TRASH_PREFIX) and e.is_dir())
    return []


def list_runs(home: Path, stored: dict[str, list[str]] | None = None) -> list[RunInfo]:
    """Every run under `home`, oldest first (ids start with their creation time).

    `stored` maps run ids to the registry refs that record them (`find_runs` builds it);
    without it no run counts as stored, so none is prunable."""
    return [_inspect(folder, stored or {}) for folder in _run_folders(home)]


def stored_runs(manifests: Iterable[Any]) -> dict[str, list[str]]:
    """Run id -> refs of the manifests whose training config records that run."""
    found: dict[str, list[str]] = {}
    for manifest in manifests:
        training = getattr(manifest, "training", None) or {}
        run = training.get("run") if isinstance(training, dict) else None
        if isinstance(run, str):
            found.setdefault(run, []).append(str(manifest.ref))
    return found


def find_runs(home: Path, manifests: Iterable[Any]) -> list[RunInfo]:
    """`list_runs`, knowing which runs' results the registry holds."""
    return list_runs(home, stored_runs(manifests))


def runs_usage(runs: list[RunInfo], home: Path) -> RunsUsage:
    """Room taken by `runs` (from `list_runs`) and by leftovers of interrupted removals."""
    leftovers = sum(_file_sizes(path).total for path in _leftovers(home))
    return RunsUsage(
        folder=runs_folder(home),
        count=len(runs),
        bytes=sum(run.size for run in runs) + leftovers,
        prunable_bytes=sum(run.state_bytes for run in runs if run.prunable) + leftovers,
    )


# --------------------------------------------------------------------------- removing


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def prune_runs(runs: list[RunInfo], home: Path, *, dry_run: bool) -> list[PrunedRun]:
    """Remove the resumable state of finished runs the registry holds the result of, and the
    folders of interrupted removals. config.json, the loss log and plot and the intermediate
    adapters stay. state.json goes first, so a crash leaves a run that is not resumable."""
    pruned: list[PrunedRun] = []
    for run in runs:
        if not run.prunable:
            continue
        files = tuple(path.relative_to(run.folder).as_posix() for path in run.state_files)
        pruned.append(PrunedRun(run.id, files, run.state_bytes))
        if dry_run:
            continue
        for path in run.state_files:  # state.json is first
            _unlink(path)
            if path.name == STATE_JSON:
                _fsync_dir(path.parent)
    for path in _leftovers(home):
        size = _file_sizes(path).total
        pruned.append(PrunedRun(path.name, (), size, leftover=True))
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
    return pruned


def resolve_ids(home: Path, ids: list[str]) -> list[Path]:
    """The folders of `ids` (each a run's id, exactly), all checked before anything is removed."""
    known = {folder.name: folder for folder in _run_folders(home)}
    folders: list[Path] = []
    for given in dict.fromkeys(ids):
        run_id = given.rstrip("/" + os.sep)
        path = Path(run_id)
        if len(path.parts) > 1 and path.resolve().parent == runs_folder(home).resolve():
            run_id = path.name  # a run's folder, e.g. pasted from `dv runs list --json`
        if run_id not in known:
            import difflib

            close = difflib.get_close_matches(run_id, list(known), n=2)
            prefixed = [name for name in known if name.startswith(run_id)] if run_id else []
            hint = (
                "did you mean " + " or ".join(repr(c) for c in (prefixed[:2] or close)) + "?"
                if prefixed or close
                else "see `dv runs list`"
            )
            raise DVError(f"no training run {given!r} in {runs_folder(home)}", hint)
        if known[run_id] not in folders:
            folders.append(known[run_id])
    return folders


def remove_runs(home: Path, folders: list[Path]) -> None:
    """Remove whole run folders. Each is first renamed out of the way (one atomic step: the
    run is gone, or still whole), then its state.json is removed, then the rest."""
    for folder in folders:
        trash = folder.with_name(f"{_TRASH_PREFIX}{folder.name}-{secrets.token_hex(3)}")
        try:
            os.replace(folder, trash)
        except FileNotFoundError:
            continue  # removed meanwhile
        _fsync_dir(folder.parent)
        _unlink(trash / "checkpoints" / STATE_JSON)
        shutil.rmtree(trash, ignore_errors=True)
