"""Issue 31, item 5: missing weights are named all at once and before a run folder exists;
a Hub that does not answer is one line after a bounded wait. huggingface_hub is replaced at
its seam (HfApi, snapshot_download): no test reaches the network."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from conftest import FAKE_COMMIT, MODELSCOPE_ID, OPEN_CLIP_ID, put_in_cache
from dreamvideo_cli.cli import main
from dreamvideo_cli.errors import MissingWeightsError
from dv_modelscope.backbones import ModelScopeBackbone


def _photos(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (300, 300), (60 * i, 90, 30)).save(folder / f"{i}.png")
    return folder


def test_learning_with_the_appearance_encoder_missing_names_it_and_makes_no_run(
    tiny_parts: tuple[Path, Path], hf_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pipeline is cached, the OpenCLIP encoder is not (offline): the fingerprint can be
    named, but the run must not start (nor leave a folder) only to fail while loading."""
    put_in_cache(hf_cache, MODELSCOPE_ID, FAKE_COMMIT, tiny_parts[0])
    code = main(["subject", "learn", str(_photos(tmp_path / "photos")), "--name", "x", "--backbone", "modelscope",
                 "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == MissingWeightsError.exit_code and len(errors) == 1 and "Traceback" not in err
    assert OPEN_CLIP_ID in errors[0] and "hf download" in errors[0]
    runs = tmp_path / "dv" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def _fake_hub(monkeypatch: pytest.MonkeyPatch, list_files: Any) -> list[str]:
    import huggingface_hub

    downloads: list[str] = []

    class Api:
        def list_repo_files(self, repo_id: str, revision: str | None = None) -> list[str]:
            return list(list_files(repo_id))

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        downloads.append(repo_id)
        raise AssertionError("nothing may be downloaded before every repository is known to be there")

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return downloads


def test_a_repository_that_cannot_be_fetched_is_named_before_any_download(
    online: None, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def list_files(repo_id: str) -> list[str]:
        if repo_id == OPEN_CLIP_ID:
            raise PermissionError("401 gated repository")
        return ["model_index.json"]  # a pipeline repository without its weights

    downloads = _fake_hub(monkeypatch, list_files)
    with pytest.raises(MissingWeightsError) as info:
        ModelScopeBackbone().fetch_weights()
    message = str(info.value)
    assert MODELSCOPE_ID in message and OPEN_CLIP_ID in message and "gated" in message and "\n" not in message
    assert downloads == []


def test_a_hub_that_does_not_answer_is_one_line_after_a_bounded_wait(
    online: None, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def list_files(repo_id: str) -> list[str]:
        time.sleep(30)  # a network configured but unreachable: the library's retries go on and on
        return []

    downloads = _fake_hub(monkeypatch, list_files)
    monkeypatch.setenv("DV_HUB_TIMEOUT", "0.5")
    started = time.monotonic()
    with pytest.raises(MissingWeightsError) as info:
        ModelScopeBackbone().fetch_weights()
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "did not answer within 0.5 s" in message and MODELSCOPE_ID in message and OPEN_CLIP_ID in message
    assert "hf download" in message and downloads == []
