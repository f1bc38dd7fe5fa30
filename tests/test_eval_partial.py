"""Issue 31, item 7: `dv eval` scores what can be scored. A metric whose weights are missing,
a video that cannot be read and a metric that fails on one video are reported, the other
scores are kept and shown, and the exit code is non-zero (3 when weights are missing)."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dreamvideo_cli import media, plugins
from dreamvideo_cli.cli import main
from dreamvideo_cli.evaluate import evaluate_videos, incomplete
from dreamvideo_cli.events import EventLog, Note
from dreamvideo_cli.plugins import pm
from dv_registry import Registry

METRICS = """
from dreamvideo_cli.errors import MissingWeightsError
from dreamvideo_cli.hookspecs import hookimpl
from dreamvideo_cli.metrics import Metric


class Brightness(Metric):
    name = "brightness"

    def score(self, sample):
        return float(sample.frames.mean()) / 255.0


class Weighty(Metric):
    name = "weighty"

    def prepare(self):
        raise MissingWeightsError("weighty's weights are not on this machine", "hf download weighty")

    def score(self, sample):
        raise AssertionError("never scored without its weights")


class Fragile(Metric):
    name = "fragile"

    def score(self, sample):
        if sample.frames.mean() > 200:
            raise ValueError("too bright")
        return 1.0


@hookimpl
def register_metrics(register):
    register(Brightness)
    register(Weighty)
    register(Fragile)
"""


@pytest.fixture
def only_these_metrics(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("DV_HOME", str(tmp_path / "home"))
    module = types.ModuleType("dv_test_partial_metrics")
    exec(compile(METRICS, "<metrics>", "exec"), module.__dict__)
    plugins.load_plugins()
    pm.register(module, name="partial-metrics")
    mine = {name: reg for name, reg in plugins.get_metrics().items() if reg.plugin == "partial-metrics"}
    monkeypatch.setattr(plugins, "get_metrics", lambda: mine)
    yield
    pm.unregister(name="partial-metrics")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    videos = tmp_path / "videos"
    videos.mkdir()
    media.write_video(videos / "a-dark.mp4", np.full((3, 16, 16, 3), 51, np.uint8), 8)
    media.write_video(videos / "b-bright.mp4", np.full((3, 16, 16, 3), 250, np.uint8), 8)
    (videos / "c-broken.mp4").write_bytes(b"not a video at all")
    return videos


def test_what_can_be_scored_is_scored_and_the_rest_reported(only_these_metrics: None, folder: Path) -> None:
    log = EventLog()
    dark, bright, broken = evaluate_videos([folder], registry=Registry(), device="cpu", on_event=log)
    assert dark.scores == {"brightness": pytest.approx(0.2), "fragile": 1.0}
    assert bright.scores == {"brightness": pytest.approx(250 / 255, abs=0.02)}
    assert bright.failed["fragile"] == "ValueError: too bright"
    assert broken.error is not None and broken.scores == {}
    assert all(
        r.weights_missing == ["weighty"] and "not on this machine" in r.failed["weighty"] for r in (dark, bright)
    )
    warnings = [e.message for e in log.of_type(Note) if isinstance(e, Note) and e.level == "warning"]
    assert sum("weighty not scored" in w for w in warnings) == 1  # said once, not once per video
    problem = incomplete([dark, bright, broken])
    assert (
        problem is not None
        and problem.exit_code == 3
        and "3 of 3 video(s) not fully scored: no weights for weighty" in str(problem)
    )


def test_the_command_shows_partial_scores_and_exits_non_zero(
    only_these_metrics: None, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["eval", str(folder), "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 3 and "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "not fully scored" in errors[0] and "hf download weighty" in errors[0]
    videos = json.loads(captured.out)["videos"]
    assert [Path(v["video"]).name for v in videos] == ["a-dark.mp4", "b-bright.mp4", "c-broken.mp4"]
    assert videos[0]["scores"]["brightness"] == pytest.approx(0.2)
    code = main(["eval", str(folder / "a-dark.mp4"), "-m", "brightness", "--device", "cpu"])
    assert code == 0
