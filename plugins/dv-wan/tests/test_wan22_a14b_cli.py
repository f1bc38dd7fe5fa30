"""The whole CLI on tiny-wan2.2-a14b (Wan 2.2 T2V-A14B's classes: two tiny experts, random
weights) on a CPU, offline: subject learn, motion learn and compose write a video, each
expert's adapters stored under its own sites and attached to it; `--experts` chooses the
experts and limits the training timesteps to theirs; `wan2.2-a14b` is listed and described
per expert on the meta device, and without weights fails in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamvideo_cli import media
from dreamvideo_cli.cli import main
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.experts import chosen_experts, restricted, sample_timesteps
from dreamvideo_cli.objectives import FlowMatchObjective
from dreamvideo_cli.registry_entries import load_adapter_tensors
from dv_wan.backbones import TinyWan22A14BBackbone, WanBackbone
from dv_wan.family import WAN22_A14B

TINY = "tiny-wan2.2-a14b"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "dv"  # conftest's DV_HOME


def _clips(folder: Path) -> Path:
    folder.mkdir()
    frames = np.zeros((30, 36, 36, 3), np.uint8)
    for i in range(30):
        frames[i, 10:20, i : i + 10] = 255
    media.write_video(folder / "slide.mp4", frames, fps=16)
    return folder


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _experts_stored(ref: str) -> set[str]:
    from dv_registry import Registry

    registry = Registry()
    return {key.split(".")[0] for key in load_adapter_tensors(registry, registry.resolve(ref))}


@pytest.mark.slow
def test_learn_learn_compose_on_tiny_a14b(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_photos: Callable[..., Path]
) -> None:
    photos, clips = make_photos(tmp_path / "photos"), _clips(tmp_path / "clips")
    subject_args = ["--embedding-steps", "2", "--adapter-steps", "2", "--device", "cpu", "--seed", "1", "--json"]
    code, out, err = run(
        ["subject", "learn", str(photos), "--name", "rex", "--init-word", "dog", "--backbone", TINY, *subject_args],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["backbone"]["backbone"] == TINY
    assert _experts_stored("rex") == {"high", "low"}  # identity: both experts by default

    motion_args = ["--adapter-steps", "2", "--device", "cpu", "--seed", "2", "--json"]
    code, out, err = run(["motion", "learn", str(clips), "--name", "slide", "--backbone", TINY, *motion_args], capsys)
    assert code == 0, err
    assert _experts_stored("slide") == {"high"}  # motion: the high-noise expert by default
    assert json.loads(out)["training"]["experts"] == "high"
    code, _, err = run(
        [
            "motion",
            "learn",
            str(clips),
            "--name",
            "slide-both",
            "--backbone",
            TINY,
            "--experts",
            "high,low",
            *motion_args,
        ],
        capsys,
    )
    assert code == 0, err
    assert _experts_stored("slide-both") == {"high", "low"}

    # 2 UniPC steps at shift 3.0: t = 999 (high), 750 (low): the switch happens in compose too.
    for motion in ("slide", "slide-both"):
        out_file = f"{motion}.mp4"
        code, _, err = run(
            [
                "compose",
                "rex",
                motion,
                "on the beach",
                "--sample-steps",
                "2",
                "--seed",
                "3",
                "-o",
                out_file,
                "--device",
                "cpu",
            ],
            capsys,
        )
        assert code == 0, err
        clip = media.probe_clip(Path(out_file))
        assert clip.frames == 9 and (clip.height, clip.width) == (32, 32)
    meta = media.read_video_metadata(Path("slide.mp4"))
    assert meta is not None and meta["guidance"] == 4.0 and meta["expert_guidance"] == {"low": 3.0}
    # Each expert's guidance set (WanPipeline's guidance_scale and guidance_scale_2).
    base = ["compose", "rex", "slide", "on the beach", "--sample-steps", "2", "--seed", "3", "--device", "cpu"]
    code, _, err = run([*base, "--guidance", "6", "--expert-guidance", "low=1.5", "-o", "set.mp4"], capsys)
    assert code == 0, err
    meta = media.read_video_metadata(Path("set.mp4"))
    assert meta is not None and meta["guidance"] == 6.0 and meta["expert_guidance"] == {"low": 1.5}
    assert not np.array_equal(media.read_frames(Path("set.mp4"), None), media.read_frames(Path("slide.mp4"), None))


def test_each_experts_guidance_and_its_mistakes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dreamvideo_cli.composition import ComposeConfig, _expert_guidance
    from dreamvideo_cli.testing import TinyBackbone

    a14b = TinyWan22A14BBackbone()
    assert _expert_guidance(a14b, ComposeConfig()) == (("low", 3.0),)  # the backbone's own
    assert _expert_guidance(a14b, ComposeConfig(guidance=5.0)) == ()  # --guidance: every step
    chosen = ComposeConfig(guidance=5.0, expert_guidance=(("high", 4.0), ("low", 2.0)))
    assert _expert_guidance(a14b, chosen) == (("high", 4.0), ("low", 2.0))
    assert _expert_guidance(a14b, ComposeConfig(expert_guidance=(("high", 7.0),))) == (("low", 3.0), ("high", 7.0))
    with pytest.raises(DVError, match=r"names middle, but tiny-wan2\.2-a14b has the experts high, low"):
        _expert_guidance(a14b, ComposeConfig(expert_guidance=(("middle", 3.0),)))
    with pytest.raises(DVError, match="one denoiser, no experts"):
        _expert_guidance(TinyBackbone(), ComposeConfig(expert_guidance=(("low", 3.0),)))
    # A sweep's page gives each cell's command with it (the index holds it as JSON lists).
    from dreamvideo_cli.pages.sweep_page import compose_command

    cell = {"subject": "rex", "motion": "slide", "subject_scale": 1.0, "motion_scale": 1.0, "seed": 3}
    assert "--expert-guidance high=4,low=1.5" in compose_command(
        cell, "x", {"expert_guidance": [["high", 4.0], ["low", 1.5]]}
    )
    for wrong in ("low", "low=", "=3", "low=three"):
        code, _, err = run(["compose", "rex", "slide", "on the beach", "--expert-guidance", wrong], capsys)
        assert code != 0 and "Traceback" not in err and "EXPERT=SCALE" in err, (wrong, err)


def test_an_unknown_expert_is_refused_in_one_line(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clips = _clips(tmp_path / "clips")
    code, _, err = run(
        ["motion", "learn", str(clips), "--name", "x", "--backbone", TINY, "--experts", "middle", "--device", "cpu"],
        capsys,
    )
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err and len(lines) <= 2
    assert "has no expert middle" in err and "high,low" in err
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    with pytest.raises(DVError, match="one denoiser"):
        chosen_experts(WanBackbone, "motion", "high")  # Wan 2.1: one transformer


def test_training_timesteps_stay_in_the_chosen_experts_ranges() -> None:
    objective = FlowMatchObjective(shift=3.0)
    high, low = WAN22_A14B.experts()
    g = torch.Generator().manual_seed(0)
    for chosen, inside in (((high,), lambda t: t >= 875), ((low,), lambda t: t < 875)):
        t = sample_timesteps(objective, chosen, 256, g, torch.device("cpu"))
        assert t.shape == (256,) and bool(inside(objective.model_timestep(t)).all())
    # Both experts: the objective's own draw, the same stream as a one-denoiser backbone.
    assert restricted((high, low), (low, high)) == ()
    both = sample_timesteps(objective, (), 8, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert torch.equal(both, objective.sample_timesteps(8, torch.Generator().manual_seed(1), torch.device("cpu")))
    defaults = TinyWan22A14BBackbone
    assert [e.name for e in chosen_experts(defaults, "identity", None)] == ["high", "low"]
    assert [e.name for e in chosen_experts(defaults, "motion", None)] == ["high"]


def test_backbones_list_and_info_per_expert(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["backbones", "--json"], capsys)
    assert code == 0, err
    assert {"wan2.2-a14b", TINY} <= {row["name"] for row in json.loads(out)}
    code, out, err = run(["backbones", "info", "wan2.2-a14b", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["family"] == "wan-dit-experts" and info["denoiser_parameters"] == 2 * 14_288_491_584
    assert len(info["identity_sites"]) == len(info["motion_sites"]) == 80
    high, low = info["experts"]
    assert (high["name"], high["timesteps"], high["default_for"]) == ("high", "875 <= t", ["identity", "motion"])
    assert (low["name"], low["timesteps"], low["default_for"]) == ("low", "t < 875", ["identity"])
    for expert in (high, low):
        assert expert["identity_sites"] == expert["motion_sites"] == 40 and expert["widths"] == [5120]
        assert expert["parameters"]["total"] * 2 == info["parameters"]["total"]


def test_a14b_without_weights_is_one_line_naming_the_fetch_commands(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_photos: Callable[..., Path]
) -> None:
    photos = make_photos(tmp_path / "photos", scale=4)
    code, _, err = run(
        ["subject", "learn", str(photos), "--name", "rex", "--backbone", "wan2.2-a14b", "--device", "cpu"], capsys
    )
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err and len(lines) <= 2
    assert "hf download Wan-AI/Wan2.2-T2V-A14B-Diffusers" in err and "transformer_2/" in err
    assert "hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in err
