"""`dv runs list | rm | prune` and the runs line of `dv du`: training runs keep their resumable
state (the optimizer's moments: ~0.9 GB per ModelScope motion run) until the user frees it,
and nothing that could still be resumed is removed unless the user names it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dreamvideo_cli import runs as runs_module
from dreamvideo_cli.cli import main
from dreamvideo_cli.errors import DVError
from dv_registry import SAFETENSORS, NewEntry, NewFile, Registry

try:
    from tests.media_fixtures import sample_photos
except ImportError:  # tests/ run as rootdir-less modules
    from media_fixtures import sample_photos  # type: ignore[no-redef,import-not-found]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "dv-home"
    monkeypatch.setenv("DV_HOME", str(path))
    monkeypatch.chdir(tmp_path)
    return path


def dv(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def runs_json(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    code, out, err = dv(capsys, "runs", "list", "--json")
    assert code == 0, err
    return {run["id"]: run for run in json.loads(out)}


def one_error_line(code: int, err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- runs as learning leaves them ----------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    samples = sample_photos()
    for name in ("chelsea", "astronaut", "coffee"):
        Image.fromarray(samples[name]).save(folder / f"{name}.jpg", quality=92)
    return folder


def test_runs_of_real_learning(home: Path, photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One finished subject run and one stopped by Ctrl-C, as `learn_subject` writes them:
    prune frees only the finished one's state, and only `rm` removes the resumable one."""
    from dreamvideo_cli.errors import Interrupted
    from dreamvideo_cli.events import StepDone
    from dreamvideo_cli.learn import SubjectConfig, learn_subject
    from dreamvideo_cli.learn.run_folder import Run

    registry = Registry(home)

    def config() -> SubjectConfig:
        return SubjectConfig(backbone="tiny", embedding_steps=2, adapter_steps=3, save_every=2, seed=3, device="cpu")

    stored = learn_subject(photos, "cat", config(), registry=registry)
    finished_id = stored.training["run"]

    def stop_at_identity_step_1(event: object) -> None:
        if isinstance(event, StepDone) and event.stage == "identity" and event.step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as stopped:
        learn_subject(photos, "dog", config(), registry=registry, on_event=stop_at_identity_step_1)
    stopped_id = (stopped.value.hint or "").split()[-1]

    runs = runs_json(capsys)
    assert set(runs) == {finished_id, stopped_id}
    done, resumable = runs[finished_id], runs[stopped_id]
    assert (done["kind"], done["name"], done["stage"], done["status"]) == ("subject", "cat", "done", "finished")
    assert done["finished"] and done["resumable"] and done["prunable"] and "cat:v1" in done["stored"]
    assert (resumable["name"], resumable["stage"], resumable["step"], resumable["total"]) == ("dog", "identity", 1, 3)
    assert resumable["status"] == "resumable" and not resumable["finished"] and not resumable["prunable"]
    assert resumable["stored"] == []
    folder = Path(done["folder"])
    on_disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert done["size"] == on_disk and 0 < done["state_bytes"] < on_disk

    code, out, err = dv(capsys, "runs", "list")
    assert code == 0 and finished_id in out and stopped_id in out and "resumable" in out

    # dv du counts the runs.
    code, out, _ = dv(capsys, "du", "--json")
    usage = json.loads(out)["runs"]
    assert usage["count"] == 2
    assert usage["bytes"] == done["size"] + resumable["size"]
    assert usage["prunable_bytes"] == done["state_bytes"]
    code, out, _ = dv(capsys, "du")
    assert code == 0 and "2 training run(s)" in out and "dv runs prune" in out
    code, _, err = dv(capsys, "prune")
    assert code == 0 and "dv runs prune" in err  # the registry's prune points at the runs' one

    # A dry run says what and how much, and removes nothing.
    code, out, err = dv(capsys, "runs", "prune", "--dry-run")
    assert code == 0 and "would free" in out and finished_id in err and "state.json" in err
    assert (folder / "checkpoints" / "state.json").exists()

    code, out, err = dv(capsys, "runs", "prune", "--json")
    report = json.loads(out)
    assert code == 0 and not report["dry_run"] and report["bytes_freed"] == done["state_bytes"]
    assert [r["id"] for r in report["runs"]] == [finished_id]
    assert report["runs"][0]["files"][0] == "checkpoints/state.json"  # removed first
    left = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert left == ["checkpoints/adapter-step2.safetensors", "config.json", "loss.csv", "loss.png"]
    with pytest.raises(DVError, match="no saved state"):
        Run.open(home, finished_id)
    Run.open(home, stopped_id)  # the stopped run is untouched: still resumable
    runs = runs_json(capsys)
    assert runs[finished_id]["status"] == "finished" and runs[finished_id]["state_bytes"] == 0
    assert not runs[finished_id]["resumable"] and runs[stopped_id] == resumable
    code, out, _ = dv(capsys, "runs", "prune")
    assert code == 0 and "nothing to prune" in out

    # rm: only with confirmation, and every id is checked before anything goes.
    code, _, err = dv(capsys, "runs", "rm", stopped_id)
    assert "without confirmation" in one_error_line(code, err)
    code, _, err = dv(capsys, "runs", "rm", stopped_id, "no-such-run", "--yes")
    assert "no-such-run" in one_error_line(code, err)
    code, _, err = dv(capsys, "runs", "rm", stopped_id, "--dry-run")
    assert code == 0 and f"would remove run {stopped_id}" in err
    assert Path(resumable["folder"]).is_dir()
    code, _, err = dv(capsys, "runs", "rm", stopped_id, finished_id, "--yes")
    assert code == 0 and "cat:v1" in err  # what the run stored stays in the registry
    assert runs_json(capsys) == {}
    assert not any((home / "runs").iterdir())
    assert registry.resolve("cat").digest == stored.digest


def test_rm_asks_on_a_tty(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from dreamvideo_cli.cli import app
    from dreamvideo_cli.cli import runs as runs_cli

    run = make_run(home, "motion", "walk", step=3, total=10)
    monkeypatch.setattr(runs_cli, "_stdin_is_tty", lambda: True)
    declined = CliRunner().invoke(app, ["runs", "rm", run.name], input="n\n")
    assert declined.exit_code != 0 and run.is_dir()
    assert "could still be resumed" in declined.output
    accepted = CliRunner().invoke(app, ["runs", "rm", run.name], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert not run.exists()


# --- motion runs and the rules, on folders laid out as learn/motion.py writes them -----------------


def safetensors_bytes(size: int) -> bytes:
    header = json.dumps({"x": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(size)


def make_run(
    home: Path, kind: str, name: str, *, step: int | None, total: int, state_size: int = 5000, stage: str | None = None
) -> Path:
    """A run folder; `step` None: no saved state (a run killed before its first save)."""
    stage = stage or ("motion" if kind == "motion" else "identity")
    existing = len(list((home / "runs").iterdir())) if (home / "runs").is_dir() else 0
    run_id = f"20260101-{existing:06d}-{kind}-{name}-ab12"  # ids sort by creation, as real ones do
    folder = home / "runs" / run_id
    (folder / "checkpoints").mkdir(parents=True)
    config = {"steps": total} if kind == "motion" else {"embedding_steps": total, "adapter_steps": total}
    (folder / "config.json").write_text(json.dumps({"kind": kind, "name": name, "inputs": "/data", "config": config}))
    (folder / "loss.csv").write_text(
        "stage,step,loss\n" + "".join(f"{stage},{i},0.5\n" for i in range(1, (step or 2) + 1))
    )
    if step is not None:
        tensors = f"state-{stage}-{step}.safetensors"
        (folder / "checkpoints" / tensors).write_bytes(safetensors_bytes(state_size))
        meta = {"stage": stage, "step": step, "optimizer": {}, "checkpoints": [], "tensors": tensors}
        (folder / "checkpoints" / "state.json").write_text(json.dumps(meta))
    return folder


def store(home: Path, name: str, run: Path, kind: str = "motion") -> None:
    adapter = NewFile("adapter", "motion_adapter.safetensors", safetensors_bytes(8), SAFETENSORS)
    fields = {"backbone": {"backbone": "tiny"}, "training": {"run": run.name}}
    Registry(home).add_version(kind, name, NewEntry([adapter], fields))  # type: ignore[arg-type]


def test_prune_keeps_everything_that_could_still_be_resumed(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stored_done = make_run(home, "motion", "walk", step=10, total=10)
    store(home, "walk", stored_done)
    unstored_done = make_run(home, "motion", "jump", step=10, total=10)  # e.g. `dv rm jump` later
    halfway = make_run(home, "motion", "run", step=4, total=10)
    store(home, "run", halfway)  # even a name in the registry does not make a resumable run prunable
    killed = make_run(home, "motion", "swim", step=None, total=10)
    runs = runs_json(capsys)
    assert {r["name"]: r["status"] for r in runs.values()} == {
        "walk": "finished", "jump": "finished", "run": "resumable", "swim": "incomplete",
    }  # fmt: skip
    assert runs[killed.name]["resumable"] is False and runs[killed.name]["step"] == 2  # from loss.csv
    code, out, err = dv(capsys, "runs", "prune", "--json")
    report = json.loads(out)
    assert [r["id"] for r in report["runs"]] == [stored_done.name]
    assert report["kept"] == [unstored_done.name]
    assert not (stored_done / "checkpoints" / "state.json").exists()
    for folder in (unstored_done, halfway):
        assert (folder / "checkpoints" / "state.json").exists()
        assert any((folder / "checkpoints").glob("state-*.safetensors"))
    code, _, err = dv(capsys, "runs", "prune")
    assert code == 0 and f"kept the state of finished run {unstored_done.name}" in err
    assert f"dv motion learn --resume {unstored_done.name}" in err


def test_prune_removes_the_temporaries_of_interrupted_checkpoint_writes(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dv_registry.fsutil import tmp_path_for

    done = make_run(home, "motion", "walk", step=10, total=10)
    store(home, "walk", done)
    leftover = tmp_path_for(done / "checkpoints", "state-motion-12.safetensors")  # as a kill mid-save leaves it
    leftover.write_bytes(b"half a checkpoint")
    code, out, _ = dv(capsys, "runs", "prune", "--json")
    assert code == 0 and f"checkpoints/{leftover.name}" in json.loads(out)["runs"][0]["files"]
    assert not leftover.exists()


def test_the_table_shows_progress_status_and_sizes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = make_run(home, "motion", "walk", step=10, total=10, state_size=2_000_000)
    store(home, "walk", done)
    running = make_run(home, "motion", "run", step=4, total=1000)
    (running / "loss.csv").write_text("stage,step,loss\nmotion,3,0.5\nmotion,4,0.125\n")
    started = 1_790_000_000.0
    os.utime(running / "config.json", (started, started))
    os.utime(running / "loss.csv", (started + 125, started + 125))
    os.utime(running / "checkpoints" / "state.json", (started + 120, started + 120))
    code, out, err = dv(capsys, "runs", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == [
        "id",
        "kind",
        "name",
        "started",
        "duration",
        "progress",
        "last",
        "loss",
        "status",
        "stored",
        "as",
        "size",
        "state",
    ]
    fields = lines[1].split()
    assert fields[:3] == [done.name, "motion", "walk"] and {"done", "0.5", "finished"} <= set(fields)
    # When it started (local time), how long it has run, and its last loss.
    from datetime import datetime

    assert datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") in lines[2] and "2m05s" in lines[2]
    assert "0.125" in lines[2]
    listed = runs_json(capsys)[running.name]
    assert listed["started"] == "2026-09-21T14:13:20Z" and listed["duration_s"] == 125.0
    assert listed["last_loss"] == 0.125
    assert "walk:v1" in lines[1] and "2.0 MB" in lines[1]
    assert "motion 4/1000" in lines[2] and "resumable" in lines[2]
    assert "dv runs prune` would free 2.0 MB" in err


def test_an_interrupted_prune_never_leaves_a_run_that_looks_resumable(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dreamvideo_cli.learn.run_folder import Run

    done = make_run(home, "motion", "walk", step=10, total=10)
    store(home, "walk", done)
    real = runs_module._unlink
    removed: list[str] = []

    def crash_after_the_first(path: Path) -> None:
        if removed:
            raise KeyboardInterrupt  # the process dies here
        real(path)
        removed.append(path.name)

    monkeypatch.setattr(runs_module, "_unlink", crash_after_the_first)
    code, _, _ = dv(capsys, "runs", "prune")
    assert code == 130 and removed == ["state.json"]
    with pytest.raises(DVError, match="no saved state"):
        Run.open(home, done.name)  # the tensors are still there, but nothing points at them
    monkeypatch.setattr(runs_module, "_unlink", real)
    assert runs_json(capsys)[done.name]["resumable"] is False
    code, out, _ = dv(capsys, "runs", "prune")
    assert code == 0 and "freed" in out
    assert not any((done / "checkpoints").glob("state-*"))


def test_an_interrupted_rm_leaves_no_run_behind(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dreamvideo_cli.learn.run_folder import Run

    halfway = make_run(home, "motion", "run", step=4, total=10)
    rmtree = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # dies before deleting files
    code, _, _ = dv(capsys, "runs", "rm", halfway.name, "--yes")
    assert code == 0 and not halfway.exists()
    with pytest.raises(DVError, match="no training run"):
        Run.open(home, halfway.name)
    assert runs_json(capsys) == {}
    (leftover,) = (home / "runs").iterdir()
    assert leftover.name.startswith(".rm-") and not (leftover / "checkpoints" / "state.json").exists()
    code, out, _ = dv(capsys, "du", "--json")
    assert json.loads(out)["runs"]["prunable_bytes"] > 0  # du counts the leftover as freeable
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    code, out, err = dv(capsys, "runs", "prune")
    assert code == 0 and "interrupted" in err and not leftover.exists()


def test_no_runs(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runs_json(capsys) == {}
    code, out, err = dv(capsys, "runs", "list")
    assert code == 0 and out == "" and "no training runs" in err
    code, out, _ = dv(capsys, "runs", "prune")
    assert code == 0 and "nothing to prune" in out
    code, out, _ = dv(capsys, "du", "--json")
    assert json.loads(out)["runs"] == {"folder": str(home / "runs"), "count": 0, "bytes": 0, "prunable_bytes": 0}
