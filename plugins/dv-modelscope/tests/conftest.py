"""Fixtures for dv-modelscope: no test reaches the network, and the loading code runs for
real on tiny ModelScope-shaped components saved with their libraries' own save functions."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MODELSCOPE_ID = "ali-vilab/text-to-video-ms-1.7b"
OPEN_CLIP_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"
OPEN_CLIP_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"

# A ViT-H-14-shaped OpenCLIP model, a few thousand parameters big.
TINY_OPEN_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Offline, with an empty Hugging Face cache and dv home of the test's own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("DV_HOME", str(tmp_path / "dv"))
    yield


def save_open_clip(folder: Path, scratch: Path) -> Path:
    """A tiny OpenCLIP model saved the way OpenCLIP hub repositories hold it."""
    import json

    import open_clip
    import torch
    from open_clip.push_to_hf_hub import save_for_hf

    from dreamvideo_cli.testing import tiny_tokenizer

    config_file = scratch / "dv-tiny-open-clip.json"
    config_file.write_text(json.dumps(TINY_OPEN_CLIP_CFG))
    open_clip.add_model_config(config_file)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("dv-tiny-open-clip")
    save_for_hf(model, tiny_tokenizer(), TINY_OPEN_CLIP_CFG, str(folder), safe_serialization=True)
    return folder


def save_tiny_pipeline(folder: Path) -> Path:
    """unet/ (as an fp16 variant, like the hub), vae/, text_encoder/, tokenizer/ of a tiny
    ModelScope-shaped pipeline, written by diffusers' and transformers' save_pretrained."""
    import torch
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel

    from dreamvideo_cli.testing import (
        tiny_text_config,
        tiny_tokenizer,
        tiny_unet_config,
        tiny_vae_config,
    )

    tokenizer = tiny_tokenizer(max_length=77)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet3DConditionModel(**tiny_unet_config())
        vae = AutoencoderKL(**tiny_vae_config())
        text_encoder = CLIPTextModel(tiny_text_config(len(tokenizer)))
    unet.half().save_pretrained(folder / "unet", variant="fp16")
    vae.save_pretrained(folder / "vae")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "model_index.json").write_text('{"_class_name": "TextToVideoSDPipeline"}')
    return folder


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(pipeline folder, OpenCLIP folder), built once per session and copied by tests that change them."""
    root = tmp_path_factory.mktemp("tiny-modelscope")
    pipeline = save_tiny_pipeline(root / "pipeline")
    open_clip_folder = save_open_clip(root / "open_clip", root)
    return pipeline, open_clip_folder


@pytest.fixture
def local_folder(tiny_parts: tuple[Path, Path], tmp_path: Path) -> Path:
    """A --backbone-path folder: the tiny pipeline with the OpenCLIP model in image_encoder/."""
    pipeline, open_clip_folder = tiny_parts
    folder = tmp_path / "local-backbone"
    shutil.copytree(pipeline, folder)
    shutil.copytree(open_clip_folder, folder / "image_encoder")
    return folder


def put_in_cache(cache: Path, repo_id: str, commit: str, source: Path) -> Path:
    """Lay `source` out as huggingface_hub caches a repository: snapshots/<commit>/ and refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    """The (empty) hub cache huggingface_hub would use under this test's HF_HOME."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    return cache
