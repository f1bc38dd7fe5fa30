"""The whole CLI on tiny-wan (Wan's classes, random weights): subject learn, motion learn,
compose, eval and bench, on a CPU, offline; and the real backbones' discovery and errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamvideo_cli import media
from dreamvideo_cli.cli import main

SUBJECT = [
    "--backbone",
    "tiny-wan",
    "--embedding-steps",
    "3",
    "--adapter-steps",
    "3",
    "--device",
    "cpu",
    "--save-every",
    "2",
]
MOTION = ["--backbone", "tiny-wan", "--adapter-steps", "3", "--device", "cpu"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dvhome"
    monkeypatch.setenv("DV_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    return home


def _clips(folder: Path) -> Path:
    folder.mkdir()
    for n, fps in ((40, 30), (12, 16)):  # the second is shorter than one window: it loops
        frames = np.zeros((n, 36, 44, 3), np.uint8)
        for i in range(n):
            frames[i, 10:20, i % 30 : i % 30 + 10] = 255
        media.write_video(folder / f"clip{n}.mp4", frames, fps=fps)
    return folder


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_learn_learn_compose_eval_on_tiny_wan(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_photos: Callable[..., Path]
) -> None:
    photos, clips = make_photos(tmp_path / "photos", width=40), _clips(tmp_path / "clips")
    code, out, err = run(
        ["subject", "learn", str(photos), "--name", "rex", "--init-word", "dog", *SUBJECT, "--seed", "1", "--json"],
        capsys,
    )
    assert code == 0, err
    subject = json.loads(out)
    assert subject["backbone"]["backbone"] == "tiny-wan" and subject["token"] == "<rex>"
    assert subject["adapter"]["bottleneck"] == 8 and subject["parameter_count"] > 0

    code, out, err = run(["motion", "learn", str(clips), "--name", "slide", *MOTION, "--seed", "2", "--json"], capsys)
    assert code == 0, err
    motion = json.loads(out)
    assert motion["training"]["frames"] == 9 and motion["training"]["fps"] == 16
    assert motion["adapter"]["condition"] == "bottleneck"

    code, out, err = run(
        [
            "compose",
            "rex",
            "slide",
            "on the beach",
            "--sample-steps",
            "3",
            "--seed",
            "3",
            "-o",
            "out.mp4",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, err
    assert "prompt: a <rex> slide on the beach" in err and "prompt" not in out  # said once, on stderr
    assert media.probe_clip(Path("out.mp4")).frames == 9
    meta = media.read_video_metadata(Path("out.mp4"))
    assert meta is not None and meta["sampler"] == "unipc" and meta["guidance"] == 5.0

    # A checkpoint tag composes; the same seed gives the same video; euler samples too.
    for name in ("a.mp4", "b.mp4"):
        code, _, err = run(
            [
                "compose",
                "rex:step2",
                "-",
                "in the snow",
                "--sample-steps",
                "2",
                "--frames",
                "5",
                "--seed",
                "5",
                "-o",
                name,
                "--device",
                "cpu",
                "--sampler",
                "euler",
            ],
            capsys,
        )
        assert code == 0, err
    assert np.array_equal(media.read_frames("a.mp4", None), media.read_frames("b.mp4", None))

    code, out, err = run(["compose", "rex", "-", "x", "--frames", "8", "-o", "c.mp4", "--device", "cpu"], capsys)
    assert code != 0 and "4k+1" in err and "Traceback" not in err
    code, out, err = run(
        ["compose", "rex", "-", "x", "--sampler", "ddim", "-o", "c.mp4", "--device", "cpu", "--sample-steps", "2"],
        capsys,
    )
    assert code != 0 and "rectified flow" in err and "Traceback" not in err

    # An evaluation grid composes every cell through the same loaded backbone.
    (tmp_path / "prompts.txt").write_text("in the snow\n")
    with _mean_pixel_metric():
        code, out, err = run(
            [
                "eval",
                "grid",
                "rex,-",
                "slide",
                "--prompts",
                str(tmp_path / "prompts.txt"),
                "-o",
                "./grid",
                "--sample-steps",
                "1",
                "--device",
                "cpu",
                "--metric",
                "mean-pixel",
                "--json",
            ],
            capsys,
        )
    assert code == 0, err
    cells = json.loads((tmp_path / "grid" / "results.json").read_text())["cells"]
    assert len(cells) == 2 and all("mean-pixel" in json.dumps(c) for c in cells)


@contextmanager
def _mean_pixel_metric() -> Iterator[None]:
    from dreamvideo_cli.hookspecs import hookimpl
    from dreamvideo_cli.metrics import EvalSample, Metric
    from dreamvideo_cli.plugins import load_plugins, pm

    class MeanPixel(Metric):
        name = "mean-pixel"
        description = "mean pixel value / 255"

        def score(self, sample: EvalSample) -> float:
            return float(sample.frames.mean()) / 255.0

    class Plugin:
        @hookimpl
        def register_metrics(self, register: Any) -> None:
            register(MeanPixel)

    load_plugins()
    pm.register(Plugin(), name="wan-test-metrics")
    try:
        yield
    finally:
        pm.unregister(name="wan-test-metrics")


@pytest.mark.slow
def test_bench_on_tiny_wan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["bench", "--backbone", "tiny-wan", "--device", "cpu", "--json", "--sample-steps", "2", "--repeats", "1"],
        capsys,
    )
    assert code == 0, err
    data = json.loads(out)
    assert set(data["speedup"]) == {"subject step", "motion step", "compose"}
    assert data["frames"] == 9


def test_backbones_list_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["backbones", "--json"], capsys)
    assert code == 0, err
    names = {row["name"] for row in json.loads(out)}
    assert {"wan", "wan-14b", "tiny-wan"} <= names
    code, out, err = run(["backbones", "info", "wan", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["family"] == "wan-dit" and info["objective"] == "flow"
    assert info["denoiser_parameters"] == 1_418_996_800
    assert len(info["identity_sites"]) == 30 and len(info["motion_sites"]) == 30
    assert info["identity_sites"][0]["slots"] == [{"sublayer": "attn2", "reads_before": "norm2"}]
    assert info["parameters"]["identity"] == 11_846_400 and info["parameters"]["motion"] == 31_564_800
    code, out, err = run(["backbones", "info", "wan-14b", "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["identity_sites"]) == 40


def test_wan_without_weights_is_one_line_naming_the_fetch_command(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_photos: Callable[..., Path]
) -> None:
    photos = make_photos(tmp_path / "photos", width=40, scale=4)
    code, _, err = run(
        ["subject", "learn", str(photos), "--name", "rex", "--backbone", "wan", "--device", "cpu"], capsys
    )
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err
    assert "hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in err
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    assert len(lines) <= 2  # the error and its hint
