"""Small things a new user trips over (issue 20): missing weights named all at once, the toy
world's training time as the docs measured it, commands that run as printed, and output
folders git does not offer to commit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dreamvideo_cli.errors import MissingWeightsError

ROOT = Path(__file__).resolve().parents[1]
OPEN_CLIP_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MODELSCOPE_ID = "ali-vilab/text-to-video-ms-1.7b"


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No network and an empty Hugging Face cache; the hub cache folder is returned."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("DV_HOME", str(tmp_path / "dv"))
    return tmp_path / "hf" / "hub"


def cache_open_clip(cache: Path) -> None:
    """What `hf download` leaves for the OpenCLIP encoder (only the names matter here)."""
    commit = "f" * 40
    repo = cache / ("models--" + OPEN_CLIP_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_config.json").write_text("{}")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_modelscope_offline_names_the_backbone_and_the_appearance_encoder(offline_cache: Path) -> None:
    """Learning needs both; the first check (the fingerprint, before any run folder) names
    both in one line with both fetch commands, not one per attempt."""
    from dv_modelscope.backbones import ModelScopeBackbone

    backbone = ModelScopeBackbone()
    with pytest.raises(MissingWeightsError) as caught:
        backbone.fingerprint()
    message = str(caught.value)
    assert "\n" not in message
    assert f"ModelScopeT2V weights ({MODELSCOPE_ID})" in message and f"appearance encoder ({OPEN_CLIP_ID})" in message
    pipeline, encoder = backbone._pipeline_source().command(), backbone._appearance_source().command()
    assert f"`{pipeline} && {encoder}`" in message
    cache_open_clip(offline_cache)
    with pytest.raises(MissingWeightsError) as caught:
        backbone.fingerprint()
    assert MODELSCOPE_ID in str(caught.value) and OPEN_CLIP_ID not in str(caught.value)


def test_learning_offline_names_everything_missing_in_one_line(
    offline_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from dreamvideo_cli.cli import main

    try:
        from tests.media_fixtures import sample_photos
    except ImportError:  # tests/ run as rootdir-less modules
        from media_fixtures import sample_photos  # type: ignore[no-redef,import-not-found]

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, image in list(sample_photos().items())[:3]:
        Image.fromarray(image).convert("RGB").save(photos / f"{name}.jpg")
    code = main(["subject", "learn", str(photos), "--name", "x", "--backbone", "modelscope", "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.strip()]
    assert code == MissingWeightsError.exit_code and len(errors) == 1, err
    assert MODELSCOPE_ID in errors[0] and OPEN_CLIP_ID in errors[0] and errors[0].count("hf download") == 2


def test_the_toy_world_training_time_is_the_measured_one(tmp_path: Path) -> None:
    """The hint for missing toy weights quotes docs/toyworld.md's measurement."""
    from dv_toyworld.backbone import ToyWorldBackbone

    docs = (ROOT / "docs" / "toyworld.md").read_text(encoding="utf-8")
    fine_tune, first = re.findall(r"about (\d+) minutes in all", docs)[:2]  # the docs give the fine-tune first
    with pytest.raises(MissingWeightsError) as caught:
        ToyWorldBackbone(path=str(tmp_path / "missing.safetensors")).fingerprint()
    assert f"about {first} + {fine_tune} min on a CPU core" in str(caught.value)


def test_readme_commands_run_through_uv() -> None:
    """The README's set-up is `uv` alone: a bare `python -m` would not find dv's packages."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    bare = [m.group(0) for m in re.finditer(r"(?<!uv run )\bpython -m [\w.]+", readme)]
    assert not bare, bare


def test_default_output_folders_are_ignored_by_git() -> None:
    """`dv demo` writes its --output folder (dv-demo/) and `dv compose` dv-out/ where it runs."""
    import inspect

    from dv_toyworld.cli import demo

    demo_out = inspect.signature(demo).parameters["out"].default.default
    ignored = {line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert {str(demo_out), "dv-out"} <= ignored
