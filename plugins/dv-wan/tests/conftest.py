"""Fixtures shared by dv-wan's tests: no test reaches the network, and a Hugging Face cache
laid out on disk (a "fake hub") holds the tiny models under the real repositories' names."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

OPEN_CLIP_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
# A ViT-H-14-shaped OpenCLIP model, a few thousand parameters big (image embeddings of 16).
TINY_OPEN_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}

PutInCache = Callable[[Path, str, str, Path], Path]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Offline, with an empty Hugging Face cache and a dv home of the test's own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("DV_HOME", str(tmp_path / "dv"))
    yield


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    """The (empty) Hugging Face cache `no_network` points at."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _put_in_cache(cache: Path, repo_id: str, commit: str, source: Path) -> Path:
    """Lay `source` out as huggingface_hub caches a repository: snapshots/<commit>/ and refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def put_in_cache() -> PutInCache:
    """`put_in_cache(cache, repo_id, commit, folder)`: the folder as a cached snapshot."""
    return _put_in_cache


@pytest.fixture(scope="session")
def open_clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny OpenCLIP model saved the way OpenCLIP hub repositories hold it."""
    import open_clip
    from open_clip.push_to_hf_hub import save_for_hf

    from dreamvideo_cli.appearance import CLIP_MEAN, CLIP_STD
    from dv_wan.tiny import t5_word_tokenizer

    folder = tmp_path_factory.mktemp("tiny-open-clip") / "open_clip"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)
    # What open_clip.create_model records for the config's preprocess_cfg.
    model.visual.image_mean, model.visual.image_std = CLIP_MEAN, CLIP_STD
    save_for_hf(model, t5_word_tokenizer(), TINY_OPEN_CLIP_CFG, str(folder), safe_serialization=True)
    return folder


MakePhotos = Callable[..., Path]


def _make_photos(folder: Path, width: int = 72, scale: int = 1) -> Path:
    """Three 48 x `width` photos for the tiny backbones; `scale` makes them large enough for
    a real backbone's size check (the learn commands refuse photos that cannot teach it)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = np.full((48, width, 3), (200, 80 + 30 * i, 60), np.uint8)
        image[10:30, 8:28] = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(image.repeat(scale, axis=0).repeat(scale, axis=1)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture
def make_photos() -> MakePhotos:
    """`make_photos(folder, width=72, scale=1)`: a folder of three small photos."""
    return _make_photos
