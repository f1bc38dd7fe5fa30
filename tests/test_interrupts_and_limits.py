"""Paper cuts a new user hits (issue 20, items 1-3): an interrupt anywhere is one line and
exit 130 with nothing half-written; impossible counts and junk weights are one line, not a
traceback; a prompt longer than the text encoder reads is cut with a warning, and refused
when the cut would drop the subject's token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dreamvideo_cli.cli import main

CLI = [sys.executable, "-c", "from dreamvideo_cli.cli import run; run()"]


def _run(
    studio: Path, args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    monkeypatch.setenv("DV_HOME", str(studio / "home"))
    code = main(args)
    return code, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    """The one `error:` line among the progress notes; no traceback."""
    lines = [line for line in err.strip().splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_sampling_is_one_line_exit_130_and_no_file(studio: Path, tmp_path: Path, sig: int) -> None:
    env = {**os.environ, "DV_HOME": str(studio / "home"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "never.mp4"
    args = [
        "compose",
        "rex",
        "-",
        "on the beach",
        "--sample-steps",
        "900",
        "--frames",
        "8",
        "--device",
        "cpu",
        "-o",
        str(out),
        "--seed",
        "1",
    ]
    # A process started in the background by a shell without job control inherits SIGINT
    # ignored, and Python then never raises KeyboardInterrupt: restore the default, as a
    # terminal would have it.
    proc = subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # stderr is not a terminal: stages are announced as lines
        if line.startswith("sampling") or time.monotonic() > deadline:
            break
    time.sleep(0.5)
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    assert "error: interrupted" in rest and "Traceback" not in rest
    assert not out.exists() and not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sample-steps", "2000"], "at most --sample-steps 999"),
        (
            ["--sample-steps", "1000"],
            "at most --sample-steps 999",
        ),  # DDIM's offset: step 1000 of 1000 is past the last level
        (["--sample-steps", "0"], "--sample-steps must be at least 1"),
        (["--frames", "0"], "--frames must be at least 1"),
    ],
)
def test_impossible_counts_are_one_line(
    studio: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    expected: str,
) -> None:
    code, err = _run(
        studio,
        ["compose", "rex", "-", "on the beach", "-o", str(tmp_path / "x.mp4"), "--device", "cpu", *args],
        capsys,
        monkeypatch,
    )
    assert code == 1
    assert expected in _one_error_line(err)


def test_junk_weights_for_the_toy_world_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dreamvideo_cli.errors import MissingWeightsError
    from dv_toyworld.backbone import ToyWorldBackbone

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    for path in (junk, Path(__file__)):
        with pytest.raises(MissingWeightsError, match="cannot load the toyworld weights") as caught:
            ToyWorldBackbone(path=str(path)).load("cpu")
        assert "\n" not in str(caught.value)


def test_a_long_prompt_is_cut_with_a_warning(
    studio: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The tiny backbone's tokenizer reads 16 tokens.
    long = "{subject} on the beach in the snow in the park on the street in the forest"
    code, err = _run(
        studio,
        [
            "compose",
            "rex",
            "-",
            long,
            "-o",
            str(tmp_path / "a.mp4"),
            "--device",
            "cpu",
            "--sample-steps",
            "1",
            "--frames",
            "2",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    assert "is longer than tiny's text encoder reads (16 tokens); it is cut before:" in err and "forest" in err


def test_a_cut_that_drops_the_subject_token_is_refused(
    studio: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    long = "on the beach in the snow in the park on the street in the forest with {subject}"
    code, err = _run(
        studio,
        [
            "compose",
            "rex",
            "-",
            long,
            "-o",
            str(tmp_path / "b.mp4"),
            "--device",
            "cpu",
            "--sample-steps",
            "1",
            "--frames",
            "2",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 1
    line = _one_error_line(err)
    assert "drops the subject's token <rex>" in line and "{subject} earlier" in line
    assert not (tmp_path / "b.mp4").exists()


def test_name_errors_come_before_torch_is_imported(studio: Path) -> None:
    env = {**os.environ, "DV_HOME": str(studio / "home")}
    code = (
        "import sys\nfrom dreamvideo_cli.cli import main\n"
        "rc = main(['compose', 'nope', '-', 'x'])\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1", "False"], done.stderr


def _interrupted_subject_run(home: Path, photos: Path) -> str:
    from dreamvideo_cli.errors import Interrupted
    from dreamvideo_cli.events import StepDone
    from dreamvideo_cli.learn import SubjectConfig, learn_subject
    from dv_registry import Registry

    def stop_at_embedding_step_2(event: object) -> None:
        if isinstance(event, StepDone) and event.stage == "embedding" and event.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    config = SubjectConfig(backbone="tiny", embedding_steps=50, adapter_steps=2, save_every=0, seed=7, device="cpu")
    with pytest.raises(Interrupted) as stopped:
        learn_subject(photos, "paused", config, registry=Registry(home), on_event=stop_at_embedding_step_2)
    return stopped.value.hint.split()[-1] if stopped.value.hint else ""


def test_resume_applies_a_new_stage_end_and_says_so(studio: Path, tmp_path: Path) -> None:
    from dreamvideo_cli.events import EventLog, Note
    from dreamvideo_cli.learn import SubjectConfig, learn_subject
    from dv_registry import Registry

    home = tmp_path / "home"
    run_id = _interrupted_subject_run(home, studio / "photos")
    log = EventLog()
    requested = SubjectConfig(embedding_steps=4, device="cpu")  # everything else left at its default
    manifest = learn_subject(
        studio / "photos", "paused", requested, registry=Registry(home), resume=run_id, on_event=log
    )
    assert manifest.name == "paused" and manifest.training["embedding_steps"] == 4
    assert manifest.training["adapter_steps"] == 2 and manifest.training["backbone"] == "tiny"
    assert any(isinstance(e, Note) and "embedding_steps 50 -> 4" in e.message for e in log.events)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"lr_embedding": 1e-3}, "started with lr_embedding = 0.0001"),
        ({"embedding_steps": 1}, "past step 1 of embedding"),
    ],
)
def test_resume_refuses_what_the_saved_state_cannot_follow(
    studio: Path, tmp_path: Path, change: dict[str, float], expected: str
) -> None:
    from dreamvideo_cli.errors import DVError
    from dreamvideo_cli.learn import SubjectConfig, learn_subject
    from dv_registry import Registry

    home = tmp_path / "home"
    run_id = _interrupted_subject_run(home, studio / "photos")
    with pytest.raises(DVError, match=expected):
        learn_subject(
            studio / "photos", "paused", SubjectConfig(device="cpu", **change), registry=Registry(home), resume=run_id
        )  # type: ignore[arg-type]


def test_a_caption_longer_than_the_text_encoder_reads_is_cut_with_a_warning(tmp_path: Path) -> None:
    from dreamvideo_cli import media
    from dreamvideo_cli.events import EventLog, Note
    from dreamvideo_cli.learn import MotionConfig, learn_motion
    from dv_registry import Registry

    clips = tmp_path / "clips"
    clips.mkdir()
    media.write_video(clips / "a.mp4", np.zeros((6, 32, 32, 3), np.uint8), fps=8)
    (clips / "captions.txt").write_text(
        "a.mp4: a dog walking on the beach in the snow in the park on the street in the forest\n"
    )
    log = EventLog()
    learn_motion(
        clips,
        "long",
        MotionConfig(backbone="tiny", steps=1, frames=4, save_every=0, device="cpu"),
        registry=Registry(tmp_path / "home"),
        on_event=log,
    )
    warnings = [e.message for e in log.events if isinstance(e, Note) and e.level == "warning"]
    assert any(
        "a caption is longer than tiny's text encoder reads (16 tokens)" in w and "forest" in w for w in warnings
    ), warnings


@pytest.mark.parametrize(
    ("prompt", "token", "phrase", "expected"),
    [
        ("a big pink star on snow", None, "circles quickly", "a big pink star circles quickly on snow"),
        ("on the beach", None, "walking", "walking on the beach"),
        ("a bear", None, "walking", "a bear walking"),
        ("in the snow", "<dog>", "walking", "a <dog> walking in the snow"),
        ("a {subject} that is {motion} in a park", "<dog>", "running", "a <dog> that is running in a park"),
    ],
)
def test_prompt_building(prompt: str, token: str | None, phrase: str, expected: str) -> None:
    from dreamvideo_cli.composition import build_prompt

    assert build_prompt(prompt, token, phrase) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["motion", "learn", "CLIPS", "--name", "z", "--adapter-steps", "-5"],
        ["motion", "learn", "CLIPS", "--name", "z", "--adapter-steps", "0"],
        ["subject", "learn", "PHOTOS", "--name", "z", "--embedding-steps", "-1"],
        ["subject", "learn", "PHOTOS", "--name", "z", "--embedding-steps", "0", "--adapter-steps", "0"],
        ["subject", "learn", "PHOTOS", "--name", "z", "--batch-size", "0"],
    ],
)
def test_a_run_that_would_learn_nothing_is_refused_before_torch_loads(studio: Path, args: list[str]) -> None:
    env = {**os.environ, "DV_HOME": str(studio / "refused-home")}
    args = [str(studio / "photos") if a == "PHOTOS" else str(studio / "clips") if a == "CLIPS" else a for a in args]
    code = f"import sys\nfrom dreamvideo_cli.cli import main\nrc = main({args!r})\nprint(rc, 'torch' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1", "False"], done.stderr
    assert done.stderr.count("\n") == 1 and ("must be at least" in done.stderr or "would learn nothing" in done.stderr)
    assert not (studio / "refused-home" / "manifests").exists()


def test_resume_refuses_another_name_and_a_finished_run(studio: Path, tmp_path: Path) -> None:
    from dreamvideo_cli.errors import DVError
    from dreamvideo_cli.learn import SubjectConfig, learn_subject
    from dv_registry import Registry

    home = tmp_path / "home"
    run_id = _interrupted_subject_run(home, studio / "photos")
    config = SubjectConfig(device="cpu")
    with pytest.raises(DVError, match="learns 'paused', not 'other'"):
        learn_subject(studio / "photos", "other", config, registry=Registry(home), resume=run_id)
    learn_subject(studio / "photos", "", config, registry=Registry(home), resume=run_id)  # finishes it: v1
    with pytest.raises(DVError, match="has finished"):
        learn_subject(studio / "photos", "", config, registry=Registry(home), resume=run_id)
    assert Registry(home).tags("paused") == ["latest", "v1"]  # no duplicate v2


def test_running_out_of_gpu_memory_is_one_line(
    studio: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch

    import dreamvideo_cli.composition

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(dreamvideo_cli.composition, "sample_video", out_of_memory)
    code, err = _run(
        studio, ["compose", "rex", "-", "x", "-o", str(tmp_path / "x.mp4"), "--device", "cpu"], capsys, monkeypatch
    )
    assert code == 1 and "ran out of memory" in _one_error_line(err) and "dv plan" in err


@pytest.mark.parametrize(
    ("path", "expected"), [("missing", "is not a folder"), ("photos", "could not be loaded as tiny")]
)
def test_a_backbone_path_that_cannot_be_loaded_is_one_line_and_leaves_no_run(
    studio: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    expected: str,
) -> None:
    """`--backbone-path` of a folder that does not exist, or that the model libraries cannot
    read (their OSError), is dv's one line, for learning and compose, and no run folder is left."""
    folder = str(studio / path)
    learn = ["subject", "learn", str(studio / "photos"), "--name", "other", "--backbone", "tiny",
             "--backbone-path", folder, "--embedding-steps", "1", "--adapter-steps", "1", "--device", "cpu"]  # fmt: skip
    runs = studio / "home" / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    code, err = _run(studio, learn, capsys, monkeypatch)
    assert code == 1 and expected in _one_error_line(err)
    assert (set(runs.iterdir()) if runs.is_dir() else set()) == before
    compose = ["compose", "rex", "-", "x", "--backbone-path", folder, "--device", "cpu", "-o", str(tmp_path / "a.mp4")]
    code, err = _run(studio, compose, capsys, monkeypatch)
    assert code == 1 and expected in _one_error_line(err)


def test_a_video_too_long_for_this_machine_is_refused_before_loading(
    studio: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--frames 100000` was killed for memory after 84 s with no word: it is planned first
    (a quadratic through plans at 1-3x the default length) and refused in one line, with
    nothing written; a video a little longer than the default is planned and composed."""
    out = tmp_path / "long.mp4"
    args = ["compose", "rex", "-", "x", "--frames", "100000", "--device", "cpu", "-o", str(out)]
    code, err = _run(studio, args, capsys, monkeypatch)
    assert code == 1 and "--frames 100000 would need about" in _one_error_line(err)
    assert not out.exists() and "loading backbone" not in err
    args = ["compose", "rex", "-", "x", "--frames", "12", "--sample-steps", "1", "--device", "cpu", "-o", str(out)]
    assert _run(studio, args, capsys, monkeypatch)[0] == 0 and out.exists()


def test_clips_too_long_to_learn_from_on_this_machine_are_refused_before_loading(
    studio: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dv motion learn --frames 100000` was killed for memory with no word, as compose was."""
    import numpy as np

    from dreamvideo_cli import media

    clips = tmp_path / "clips"
    clips.mkdir()
    frames = (np.arange(12, dtype=np.uint8)[:, None, None, None] * 20).repeat(32, 1).repeat(32, 2).repeat(3, 3)
    media.write_video(clips / "a.mp4", frames, 8, {})
    args = ["motion", "learn", str(clips), "--name", "far", "--phrase", "walking", "--backbone", "tiny",
            "--frames", "100000", "--adapter-steps", "1", "--device", "cpu"]  # fmt: skip
    code, err = _run(studio, args, capsys, monkeypatch)
    assert code == 1 and "--frames 100000 would need about" in _one_error_line(err)
    assert "loading backbone" not in err
