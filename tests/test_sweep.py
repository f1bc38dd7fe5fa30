"""Strength sweeps at compose (issue 16): every combination of checkpoints and scales with
one seed and one loaded backbone, a video per cell, a labelled grid PNG, a JSON index; a
single value is today's compose; `dv show` lists the checkpoints a sweep can take."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamvideo_cli import media
from dreamvideo_cli.cli import main

CLI = [sys.executable, "-c", "from dreamvideo_cli.cli import run; run()"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny subject `rex` with a checkpoint at step 2, and a tiny motion `slide`."""
    root = tmp_path_factory.mktemp("sweep")
    photos, clips = root / "photos", root / "clips"
    photos.mkdir()
    clips.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    frames = np.zeros((12, 32, 32, 3), np.uint8)
    for t in range(12):
        frames[t, 10:20, 2 * t : 2 * t + 8] = 255
    media.write_video(clips / "slide.mp4", frames, fps=8)
    env = {**os.environ, "DV_HOME": str(root / "home")}
    for args in (
        [
            "subject",
            "learn",
            str(photos),
            "--name",
            "rex",
            "--embedding-steps",
            "1",
            "--adapter-steps",
            "3",
            "--save-every",
            "2",
        ],
        [
            "motion",
            "learn",
            str(clips),
            "--name",
            "slide",
            "--adapter-steps",
            "2",
            "--frames",
            "4",
            "--save-every",
            "0",
        ],
    ):
        done = subprocess.run(
            [*CLI, *args, "--backbone", "tiny", "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    return root


def test_a_sweep_writes_a_video_per_cell_a_grid_and_an_index(
    studio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DV_HOME", str(studio / "home"))
    folder = tmp_path / "sweep"
    code = main(["compose", "rex", "slide", "on the beach", "--subject-scale", "0.5,1", "--motion-scale", "0,1",
                 "--sample-steps", "2", "--frames", "4", "--seed", "3", "--device", "cpu", "-o", str(folder), "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    index = json.loads((folder / "index.json").read_text())
    cells = index["cells"]
    assert len(cells) == 4 == len(result["cells"]) and result["output"] == str(folder)
    # The backbone is loaded once for the four cells, and said so once; --json leaves the
    # progress on stderr.
    assert captured.err.count("loading backbone") == 1 and "cell 4/4:" in captured.err
    # The index says what was swept, not the first cell's values.
    assert index["sweep"] == {"subjects": ["rex"], "motions": ["slide"], "subject_scales": [0.5, 1.0],
                              "motion_scales": [0.0, 1.0]}  # fmt: skip
    assert "subject_scale" not in index["settings"] and "motion_scale" not in index["settings"]
    assert [(c["subject_scale"], c["motion_scale"]) for c in cells] == [(0.5, 0.0), (0.5, 1.0), (1.0, 0.0), (1.0, 1.0)]
    assert {c["seed"] for c in cells} == {3}
    videos = [media.read_frames(folder / c["video"], None) for c in cells]
    assert all(v.shape == (4, 32, 32, 3) for v in videos)
    assert not np.array_equal(videos[0], videos[3])  # the scales reach the adapters
    grid = Image.open(folder / "grid.png")
    assert grid.width > 4 * 100 and grid.height > 2 * 100
    # A cell is the compose of its settings: the command the sweep's page gives for it, run
    # alone, makes the same video (to float rounding: BLAS results may differ in the last bit
    # with where the tensors happen to lie, and the encoder can carry such a bit further).
    import html
    import shlex

    page = (folder / "index.html").read_text()
    codes = [html.unescape(part.split("</code>")[0]) for part in page.split("<code>")[1:]]
    command = next(c for c in codes if c.startswith("dv compose") and "--subject-scale 1 --motion-scale 1" in c)
    single = tmp_path / "single.mp4"
    args = shlex.split(command)[1:]
    args[args.index("-o") + 1] = str(single)
    assert main(args) == 0, command
    difference = np.abs(media.read_frames(single, None).astype(np.float64) - videos[3])
    assert difference.mean() < 0.01, (command, difference.mean(), difference.max())


def test_a_sweep_over_checkpoints_and_the_best_cell_by_a_metric(
    studio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DV_HOME", str(studio / "home"))
    code = main(["show", "rex", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0 and shown["checkpoints"] == [{"tag": "v1-step2", "step": 2}]
    folder = tmp_path / "points"
    code = main(["compose", "rex:v1-step2,rex:v1", "-", "on snow", "--sample-steps", "1", "--frames", "2", "--seed", "1",
                 "--device", "cpu", "-o", str(folder), "--metric", "toy-text-alignment", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    index = json.loads((folder / "index.json").read_text())
    assert [c["subject"] for c in index["cells"]] == ["rex:v1-step2", "rex:v1"]
    assert all(isinstance(c["scores"]["toy-text-alignment"], float) for c in index["cells"])
    assert index["best"] in {c["id"] for c in index["cells"]}


def test_sweep_mistakes_are_one_line(
    studio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DV_HOME", str(studio / "home"))
    for args, expected in (
        (["--subject-scale", "0.5,x"], "--subject-scale takes numbers"),
        (["--subject-scale", "0.5,1", "-o", str(tmp_path / "a.mp4")], "a sweep writes a folder"),
        (["--metric", "toy-text-alignment"], "--metric scores the cells of a sweep"),
    ):
        code = main(["compose", "rex", "-", "x", "--device", "cpu", "--sample-steps", "1", *args])
        err = capsys.readouterr().err
        assert code == 1 and expected in err and "Traceback" not in err, err
    code = main(["compose", "rex,nope", "-", "x"])
    assert code != 0 and "nope" in capsys.readouterr().err


def test_previews_while_learning_leave_the_result_unchanged(tmp_path: Path) -> None:
    """`--preview-every 2`: a contact sheet every 2 steps of each stage in the run folder,
    and the very same token and adapter as the run without previews."""
    from dreamvideo_cli.learn import SubjectConfig, learn_subject
    from dreamvideo_cli.registry_entries import load_adapter_tensors
    from dv_registry import Registry

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    registry = Registry(tmp_path / "home")

    def learn(name: str, every: int) -> object:
        config = SubjectConfig(
            backbone="tiny",
            init_word="dog",
            embedding_steps=4,
            adapter_steps=4,
            save_every=0,
            seed=5,
            device="cpu",
            preview_every=every,
        )
        return learn_subject(photos, name, config, registry=registry)

    plain, previewed = learn("plain", 0), learn("previewed", 2)
    run = tmp_path / "home" / "runs" / previewed.training["run"]  # type: ignore[attr-defined]
    assert sorted(p.name for p in (run / "previews").iterdir()) == [
        "embedding-step2.png", "embedding-step4.png", "identity-step2.png", "identity-step4.png",
    ]  # fmt: skip
    for role in ("adapter", "token_embedding"):
        a, b = load_adapter_tensors(registry, plain, role), load_adapter_tensors(registry, previewed, role)  # type: ignore[arg-type]
        assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), role


def test_motion_previews_every_2_of_4_steps_and_the_same_adapter(studio: Path, tmp_path: Path) -> None:
    """`dv motion learn --preview-every 2 --adapter-steps 4`: two preview PNGs in the run folder and
    the same adapter as the run without previews (each run in a fresh process)."""
    env = {**os.environ, "DV_HOME": str(tmp_path / "home")}
    digests = []
    for name, extra in (("plain", []), ("previewed", ["--preview-every", "2"])):
        args = ["motion", "learn", str(studio / "clips"), "--name", name, "--phrase", "sliding", "--backbone", "tiny",
                "--adapter-steps", "4", "--frames", "4", "--save-every", "0", "--seed", "4", "--device", "cpu", "--json", *extra]  # fmt: skip
        done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        manifest = json.loads(done.stdout)
        digests.append(manifest["ref"])
        if extra:
            previews = tmp_path / "home" / "runs" / manifest["training"]["run"] / "previews"
            assert sorted(p.name for p in previews.iterdir()) == ["step2.png", "step4.png"]
    from dreamvideo_cli.registry_entries import load_adapter_tensors
    from dv_registry import Registry

    registry = Registry(tmp_path / "home")
    plain, previewed = (load_adapter_tensors(registry, registry.resolve(ref)) for ref in digests)
    assert plain.keys() == previewed.keys() and all(
        np.array_equal(plain[k].numpy(), previewed[k].numpy()) for k in plain
    )
