"""Issue 31, item 3: nothing is overwritten silently. A default compose name never replaces
an earlier video; `-o` of an existing file, a sweep into an earlier sweep's folder and a grid
into a folder holding another grid's cells are refused without --force; a sweep folder holds
exactly the files its index lists; a sweep that repeats a cell is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dreamvideo_cli.cli import main
from dreamvideo_cli.composition import ComposeConfig
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.grid import GridSpec
from dreamvideo_cli.grid.plan import plan_grid
from dreamvideo_cli.sweep import sweep_cells
from dv_registry import JSON, NewEntry, NewFile, Registry

CLI = [sys.executable, "-c", "from dreamvideo_cli.cli import run; run()"]
FAST = ["--sample-steps", "1", "--frames", "4", "--device", "cpu", "--seed", "1"]


@pytest.fixture
def home(studio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DV_HOME", str(studio / "home"))
    monkeypatch.chdir(tmp_path)
    return studio / "home"


def _dv(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.slow
def test_default_names_never_replace_an_earlier_video(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _dv(capsys, "compose", "rex", "-", "on the beach", *FAST)[0] == 0
    first = Path("dv-out/rex-1.mp4").read_bytes()
    assert _dv(capsys, "compose", "rex", "-", "in the snow", *FAST)[0] == 0  # same seed, new prompt
    assert Path("dv-out/rex-1.mp4").read_bytes() == first
    assert Path("dv-out/rex-1-2.mp4").is_file() and Path("dv-out/rex-1-2.png").is_file()


@pytest.mark.slow
def test_an_existing_output_needs_force(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Path("mine.png").write_bytes(b"not dv's")  # the contact sheet would land here
    code, err = _dv(capsys, "compose", "rex", "-", "x", "-o", "mine.mp4", *FAST)
    assert code == 1 and "mine.png exists" in err and "--force" in err
    assert Path("mine.png").read_bytes() == b"not dv's" and not Path("mine.mp4").exists()
    assert _dv(capsys, "compose", "rex", "-", "x", "-o", "mine.mp4", "--force", *FAST)[0] == 0
    assert Path("mine.mp4").is_file()


@pytest.mark.slow
def test_a_sweep_folder_holds_exactly_what_its_index_lists(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = ["compose", "rex", "-", "x", "-o", "sweep", *FAST]
    assert _dv(capsys, *sweep, "--subject-scale", "0.5,1")[0] == 0
    code, err = _dv(capsys, *sweep, "--subject-scale", "0.25,1")
    assert code == 1 and "holds an earlier sweep" in err and "--force" in err
    assert _dv(capsys, *sweep, "--subject-scale", "0.25,1", "--force")[0] == 0
    index = json.loads(Path("sweep/index.json").read_text())
    listed = {
        name for cell in index["cells"] for name in (cell["video"], cell["contact_sheet"], cell["video"] + ".json")
    }
    assert {p.name for p in Path("sweep").iterdir()} == listed | {"grid.png", "index.json", "index.html"}
    assert not [p for p in Path(".").iterdir() if p.name.startswith(".sweep")]  # nothing left beside it
    Path("other").mkdir()
    Path("other/holiday.mp4").write_bytes(b"mine")
    code, err = _dv(capsys, "compose", "rex", "-", "x", "-o", "other", "--subject-scale", "0.5,1", "--force", *FAST)
    assert code == 1 and "not a sweep folder" in err and Path("other/holiday.mp4").read_bytes() == b"mine"


def test_a_sweep_that_repeats_a_cell_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DVError, match="repeats a cell"):
        sweep_cells(["dog", "dog"], ["-"], [1.0], [1.0])
    with pytest.raises(DVError, match="repeats a cell"):
        sweep_cells(["dog"], ["-"], [1.0, 1.0], [1.0])
    code, err = _dv(capsys, "compose", "rex,rex", "-", "x", "-o", "twice", *FAST)
    assert code == 1 and "repeats a cell" in err and not Path("twice").exists()


def test_a_grid_refuses_another_grids_cells(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "home")
    fingerprint = {"backbone": "tiny", "model_id": "t", "revision": "0", "random_weights": True}
    config = NewFile("config", "config.json", b"{}", JSON)
    registry.add_version("motion", "walk", NewEntry([config], {"backbone": fingerprint, "phrase": "walking"}))
    out = tmp_path / "grid"
    (out / "cells").mkdir(parents=True)
    old = out / "cells" / "none--walk--p000--s7.mp4"  # a cell of a grid with another seed
    old.write_bytes(b"old")
    spec = GridSpec(["-"], ["walk"], ["a"], [0], out, ComposeConfig(), metrics=None)
    with pytest.raises(DVError, match="cells this grid does not have"):
        plan_grid(spec, registry)
    assert old.exists()
    (out / "cells" / "none--walk--p000--s0.result.json").write_text("{}")  # this grid's own: kept
    plan_grid(GridSpec(["-"], ["walk"], ["a"], [0], out, ComposeConfig(), force=True), registry)
    assert [p.name for p in (out / "cells").iterdir()] == ["none--walk--p000--s0.result.json"]
