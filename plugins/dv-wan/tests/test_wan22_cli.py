"""The whole CLI on tiny-wan2.2-5b (Wan 2.2 TI2V-5B's classes, random weights) on a CPU,
offline: subject learn, motion learn and compose write a video; adapters of Wan 2.1 and Wan
2.2 do not mix; `wan2.2-5b` is listed, described on the meta device, and without weights
fails in one line naming the fetch commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dreamvideo_cli import media
from dreamvideo_cli.cli import main

TINY = "tiny-wan2.2-5b"


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
    frames = np.zeros((30, 36, 68, 3), np.uint8)
    for i in range(30):
        frames[i, 10:20, 2 * i : 2 * i + 10] = 255
    media.write_video(folder / "slide.mp4", frames, fps=24)
    return folder


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_learn_learn_compose_on_tiny_wan22(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_photos: Callable[..., Path]
) -> None:
    photos, clips = make_photos(tmp_path / "photos"), _clips(tmp_path / "clips")
    subject_args = ["--embedding-steps", "2", "--adapter-steps", "2", "--device", "cpu", "--seed", "1", "--json"]
    code, out, err = run(
        ["subject", "learn", str(photos), "--name", "rex", "--init-word", "dog", "--backbone", TINY, *subject_args],
        capsys,
    )
    assert code == 0, err
    subject = json.loads(out)
    assert subject["backbone"]["backbone"] == TINY and subject["token"] == "<rex>"

    motion_args = ["--adapter-steps", "2", "--device", "cpu", "--seed", "2", "--json"]
    code, out, err = run(["motion", "learn", str(clips), "--name", "slide", "--backbone", TINY, *motion_args], capsys)
    assert code == 0, err
    motion = json.loads(out)
    assert motion["training"]["frames"] == 9 and motion["training"]["fps"] == 24

    code, out, err = run(
        [
            "compose",
            "rex",
            "slide",
            "on the beach",
            "--sample-steps",
            "2",
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
    clip = media.probe_clip(Path("out.mp4"))
    assert clip.frames == 9 and (clip.height, clip.width) == (32, 64)
    meta = media.read_video_metadata(Path("out.mp4"))
    assert meta is not None and meta["sampler"] == "unipc" and meta["fps"] == 24
    assert meta["backbone"]["backbone"] == TINY

    # A motion learnt on Wan 2.1 does not compose with a subject learnt on Wan 2.2.
    code, _, err = run(
        ["motion", "learn", str(clips), "--name", "slide21", "--backbone", "tiny-wan", *motion_args], capsys
    )
    assert code == 0, err
    code, _, err = run(["compose", "rex", "slide21", "x", "-o", "mixed.mp4", "--device", "cpu"], capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err and len(lines) <= 2
    assert "rex" in err and "tiny-wan2.2-5b" in err and "tiny-wan (" in err
    assert not Path("mixed.mp4").exists()


def test_backbones_list_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["backbones", "--json"], capsys)
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert {"wan2.2-5b", TINY} <= set(rows)
    code, out, err = run(["backbones", "info", "wan2.2-5b", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["family"] == "wan-dit-token-t" and info["objective"] == "flow"
    assert info["denoiser_parameters"] == 4_999_787_712
    assert len(info["identity_sites"]) == 30 and len(info["motion_sites"]) == 30
    assert {s["width"] for s in info["identity_sites"] + info["motion_sites"]} == {3072}
    assert info["identity_sites"][0]["slots"] == [{"sublayer": "attn2", "reads_before": "norm2"}]
    assert [s["sublayer"] for s in info["motion_sites"][0]["slots"]] == ["attn1", "ffn"]
    assert info["identity_bottleneck"] == info["motion_bottleneck"] == 128
    assert info["parameters"]["identity"] == 23_688_960 and info["parameters"]["motion"] == 55_249_920


def test_wan22_without_weights_is_one_line_naming_the_fetch_commands(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_photos: Callable[..., Path]
) -> None:
    photos = make_photos(tmp_path / "photos", scale=4)
    code, _, err = run(
        ["subject", "learn", str(photos), "--name", "rex", "--backbone", "wan2.2-5b", "--device", "cpu"], capsys
    )
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) <= 2
    assert "hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers" in err
    assert "hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in err
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
