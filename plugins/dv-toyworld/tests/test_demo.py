from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_json_end_to_end(
    tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dreamvideo_cli.cli import main
    from dv_toyworld.backbone import WEIGHTS_ENV
    from dv_toyworld.cli import QUICK_ENV

    monkeypatch.setenv("DV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_file))
    monkeypatch.setenv(QUICK_ENV, "1")
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["output"] == str(out)
    # --json changes stdout only: the progress goes on on stderr (issue 31, item 8).
    assert "embedding: " in captured.err and "sampling" in captured.err
    # The photos are said to be of the colour they are, not the nearest caption word.
    assert "photos of a big teal circle (a colour no word names)" in captured.err
    assert Path(result["video"]).is_file() and Path(result["contact_sheet"]).is_file()
    keys = {"subject_fidelity", "motion_fidelity", "text_alignment", "temporal_consistency"}
    assert set(result["metrics"]) == {"dreamvideo", "backbone_only"}
    for row in result["metrics"].values():
        # Each metric's mean over the seeds (two in quick mode) and its standard error.
        assert set(row) == keys | {f"{k}_se" for k in keys} and all(isinstance(v, float) for v in row.values())
    assert result["backbone_only_prompt"].startswith("a big green circle")  # the nearest words for teal
    assert (out / "metrics.md").read_text().count("|") > 10
    # The subject and motion went to the registry like any other.
    from dv_registry import Registry

    names = {m.name for m in Registry(tmp_path / "home").list()}
    assert {"toy-teal-circle", "toy-circles-fast"} <= names


@pytest.mark.slow
def test_ablation_quick_writes_every_row(tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dv_toyworld import ablation
    from dv_toyworld.backbone import WEIGHTS_ENV

    monkeypatch.setenv(WEIGHTS_ENV, str(weights_file))
    out = tmp_path / "ablation"
    assert ablation.main(["--output", str(out), "--quick", "--subjects", "1", "--motions", "1", "--seeds", "1"]) == 0
    report = json.loads((out / "ablation.json").read_text())
    assert set(report["means"]) == set(ablation.ROWS)
    for row in report["means"].values():
        assert set(row) == set(ablation.METRICS)
    table = (out / "ablation.md").read_text()
    assert all(row in table for row in ablation.ROWS)
    # One video per composed row (all but the backbone alone), none written over another.
    assert len(list((out / "videos").glob("*.gif"))) == len(ablation.ROWS) - 1


@pytest.mark.slow
def test_probe_reports_generation_and_denoising(weights_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dv_toyworld import probe

    assert probe.main(["--weights", str(weights_file), "--seeds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["generation"]) == len(probe.PROMPTS)
    assert [row["t"] for row in report["denoising"]] == list(probe.NOISE_STEPS)
    assert all(-1.0 <= row["caption"] <= 1.0 for row in report["denoising"])


def test_demo_options_reach_the_config_and_cpu_threads_are_halved(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    import torch

    from dreamvideo_cli.cli import main
    from dreamvideo_cli.errors import DVError
    from dv_toyworld import demo

    seen: dict[str, object] = {}

    def fake_run_demo(out: Path, config: demo.DemoConfig, registry: object, on_event: object = None) -> None:
        seen["config"] = config
        raise DVError("stopped by the test")

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.setdefault("threads", n))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    code = main(["demo", "--seeds", "3", "--motion-scale", "0.7", "--appearance-strength", "0.25", "--json"])
    assert code != 0 and "stopped by the test" in capsys.readouterr().err
    config = seen["config"]
    assert isinstance(config, demo.DemoConfig)
    assert (config.seeds, config.motion_scale, config.appearance_strength) == (3, 0.7, 0.25)
    assert seen["threads"] == max(1, min(4, len(os.sched_getaffinity(0)) // 2))


def test_demo_help_states_the_config_defaults() -> None:
    """`dv demo` keeps typer-only imports at start-up, so its help repeats DemoConfig's
    defaults as text; this keeps the two from drifting apart."""
    import inspect

    from dv_toyworld import cli, demo

    defaults = demo.DemoConfig()
    params = inspect.signature(cli.demo).parameters
    for option in ("seeds", "motion_scale", "appearance_strength"):
        assert f"[default: {getattr(defaults, option)}]" in params[option].default.help, option


def test_an_interrupted_demo_says_to_run_it_again_not_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dreamvideo_cli.cli import main
    from dreamvideo_cli.errors import Interrupted
    from dv_toyworld import demo

    def interrupted_run_demo(out: Path, config: demo.DemoConfig, registry: object, on_event: object = None) -> None:
        raise Interrupted("stopped during embedding at step 3; state saved in run x", "continue with --resume x")

    monkeypatch.setattr(demo, "run_demo", interrupted_run_demo)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = main(["demo", "--json"])
    err = capsys.readouterr().err
    assert code == 130 and "run `dv demo` again" in err and "--resume" not in err


def test_the_demo_composes_on_a_scene_in_no_clip_and_no_photo() -> None:
    """The composed video's background must come from the prompt, not from the data."""
    from dv_toyworld import data
    from dv_toyworld.demo import DemoConfig

    config = DemoConfig()
    photo_scenes = {data.PHOTO_SCENES[i % len(data.PHOTO_SCENES)] for i in range(config.photos)}
    assert config.scene not in config.clip_scenes and config.scene not in photo_scenes


def test_the_closing_hint_composes_with_the_demos_settings() -> None:
    """`dv compose`'s defaults (guidance 9, appearance guidance 1) wreck the toy world; the
    hint the demo prints must make what the demo made."""
    import shlex

    from dreamvideo_cli.cli.compose import compose as compose_command
    from dv_toyworld.demo import DemoConfig

    config = DemoConfig()
    hint = config.compose_command("toy-pink-star:v1", "toy-circles-fast:v1", "on grass")
    args = shlex.split(hint)
    assert args[:5] == ["dv", "compose", "toy-pink-star:v1", "toy-circles-fast:v1", "on grass"]
    flags = dict(zip(args[5::2], args[6::2], strict=True))
    assert float(flags["--guidance"]) == config.guidance and int(flags["--sample-steps"]) == config.sample_steps
    assert float(flags["--appearance-strength"]) == config.appearance_strength and int(flags["--seed"]) == config.seed
    import inspect

    known = {
        d
        for p in inspect.signature(compose_command).parameters.values()
        for d in (getattr(p.default, "param_decls", None) or ())
    }
    assert set(flags) <= known


@pytest.mark.slow
def test_motion_learnt_in_a_child_process_returns_its_error_to_the_parent(tmp_path: Path) -> None:
    """A user error in the child process (here: no clips) reaches the parent as the same
    DVError, so `dv demo` prints its one line."""
    from dreamvideo_cli.errors import DVError
    from dreamvideo_cli.events import EventLog, Note
    from dv_toyworld import world
    from dv_toyworld.demo import DemoConfig
    from dv_toyworld.motion_process import MotionProcess

    config = DemoConfig(random_weights=True).quick().motion_config(world.Motion("circles"))
    log = EventLog()
    with MotionProcess(tmp_path / "no-clips", "m", config, tmp_path / "home", 1) as run:
        run.forward(log)(Note("the parent's own event"))
        with pytest.raises(DVError) as raised:
            run.result(log)
    assert "no-clips" in str(raised.value)
    assert Note("the parent's own event") in log.events


@pytest.mark.slow
def test_learning_side_by_side_stores_what_learning_in_turn_stores(tmp_path: Path) -> None:
    """The demo's second process changes its wall time, not its result: the same token,
    identity adapter and motion adapter, tensor for tensor, as one process in turn."""
    from dataclasses import replace

    import torch
    from safetensors.torch import load_file

    from dv_registry import Registry
    from dv_toyworld.demo import DemoConfig, run_demo

    base = replace(DemoConfig(random_weights=True).quick(), embedding_steps=4, adapter_steps=3, motion_steps=6)
    stored = {}
    for side_by_side in (True, False):
        registry = Registry(tmp_path / f"home-{side_by_side}")
        run_demo(tmp_path / f"out-{side_by_side}", replace(base, side_by_side=side_by_side), registry)
        tensors = {}
        for entry in registry.list():
            for f in entry.files:
                if f.filename.endswith(".safetensors"):
                    tensors[(entry.name, f.filename)] = load_file(str(registry.blobs.path(f.digest)))
        stored[side_by_side] = tensors
    assert set(stored[True]) == set(stored[False]) and len(stored[True]) == 3
    for key, tensors in stored[True].items():
        assert all(torch.equal(tensors[k], stored[False][key][k]) for k in tensors), key
