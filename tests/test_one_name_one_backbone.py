"""Issue 31, item 2: one name, one backbone. Relearning a name on another backbone is refused
without --force (before anything loads); a compose of a subject and a motion from different
backbones names the versions that would work; a tag never crosses names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamvideo_cli.cli import main
from dreamvideo_cli.compose_inputs import resolve_pair
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.learn_inputs import check_backbone_of_name
from dv_registry import JSON, NewEntry, NewFile, Registry


def _entry(backbone: str, **fields: object) -> NewEntry:
    config = NewFile("config", "config.json", json.dumps({"backbone": backbone}).encode(), JSON)
    fingerprint = {"backbone": backbone, "model_id": f"test/{backbone}", "revision": "0", "random_weights": True}
    return NewEntry(files=[config], fields={"backbone": fingerprint, "parameter_count": 1, **fields})


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("DV_HOME", str(tmp_path / "home"))
    registry = Registry(tmp_path / "home")
    registry.add_version("subject", "dog", _entry("tiny", token="<dog>", init_word="dog"))
    registry.add_version("motion", "walk", _entry("tiny", phrase="walking"))
    return registry


def test_relearning_a_name_on_another_backbone_is_refused_without_force(registry: Registry) -> None:
    with pytest.raises(DVError, match=r"dog is learnt on tiny .*would move dog:latest") as caught:
        check_backbone_of_name(registry, "subject", "dog", "tiny-wan", True, force=False)
    assert "--force" in str(caught.value)
    assert check_backbone_of_name(registry, "subject", "dog", "tiny", True, force=False) is None
    assert check_backbone_of_name(registry, "subject", "cat", "tiny-wan", True, force=False) is None
    said = check_backbone_of_name(registry, "subject", "dog", "tiny-wan", True, force=True)
    assert said is not None and "moves from tiny" in said


def test_the_learn_command_refuses_before_reading_photos(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 30 * i, np.uint8)).save(photos / f"{i}.png")
    code = main(["subject", "learn", str(photos), "--name", "dog", "--backbone", "tiny-wan", "--random-weights"])
    err = capsys.readouterr().err
    assert code == 1 and "would move dog:latest" in err and "Traceback" not in err
    assert registry.tags("dog") == ["latest", "v1"]


def test_compose_across_backbones_names_the_versions_that_work(registry: Registry) -> None:
    registry.add_version("subject", "dog", _entry("tiny-wan", token="<dog>", init_word="dog"))  # --force
    with pytest.raises(DVError) as caught:
        resolve_pair(registry, "dog", "walk")
    message = str(caught.value)
    assert "dog:latest was learnt on tiny-wan" in message and "walk:latest on tiny" in message
    assert "dv compose dog:v1 walk:latest" in message
    subject, motion = resolve_pair(registry, "dog:v1", "walk")
    assert subject is not None and motion is not None


def test_a_tag_never_crosses_names(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    registry.add_version("subject", "intr", _entry("tiny", token="<intr>", init_word="dog"))
    code = main(["tag", "intr:v1", "dog:x"])
    err = capsys.readouterr().err
    assert code == 1 and "stays within its name" in err and "intr:x" in err
    assert "x" not in registry.tags("dog")
