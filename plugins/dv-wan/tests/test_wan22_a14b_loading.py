"""Wan 2.2 T2V-A14B's weights: the tiny two-expert model saved with save_pretrained (a
WanPipeline folder with transformer/ and transformer_2/) and loaded back from a local folder
and from the fake hub, offline; the one-line error naming the fetch command and every missing
part; the full-size architecture on the meta device."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from dreamvideo_cli.errors import DVError, MissingWeightsError
from dv_wan import configs
from dv_wan.backbones import TinyWan22A14BBackbone, Wan14BBackbone, Wan22A14BBackbone
from dv_wan.family import WanExperts
from dv_wan.loading import build_random
from dv_wan.tiny import save_tiny_wan

A14B_ID = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
OPEN_CLIP_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
COMMIT = "a14ba14ba14ba14ba14ba14ba14ba14ba14ba14b"


@pytest.fixture(scope="module")
def tiny_a14b_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny A14B as a WanPipeline folder with image_encoder/; tests that change it copy it."""
    return save_tiny_wan(tmp_path_factory.mktemp("tiny-a14b") / "pipeline", version="a14b")


def _velocity(parts: Any) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 16, 3, 4, 4, generator=g)
    with torch.no_grad():  # one row for each expert
        return parts.denoise(latents, torch.tensor([900.0, 100.0]), torch.randn(2, 32, 32, generator=g))


def test_the_saved_folder_is_a_two_expert_pipeline(tiny_a14b_folder: Path) -> None:
    index = json.loads((tiny_a14b_folder / "model_index.json").read_text())
    assert index["boundary_ratio"] == 0.875 and index["transformer_2"] == ["diffusers", "WanTransformer3DModel"]
    assert (tiny_a14b_folder / "transformer_2" / "config.json").is_file()
    scheduler = json.loads((tiny_a14b_folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["flow_shift"] == 3.0


def test_a_local_folder_loads_as_built(tiny_a14b_folder: Path) -> None:
    built = TinyWan22A14BBackbone().load("cpu")
    loaded = TinyWan22A14BBackbone(path=str(tiny_a14b_folder)).load("cpu")
    assert isinstance(loaded.denoiser, WanExperts) and loaded.denoiser.boundary == 875.0
    assert not torch.equal(
        built.denoiser.high.blocks[0].ffn.net[0].proj.weight, built.denoiser.low.blocks[0].ffn.net[0].proj.weight
    )  # type: ignore[union-attr,index]
    # The same weights; a batch of one row per expert runs batch-1 products, whose float
    # rounding may follow the weights' memory alignment, so closeness rather than equality.
    torch.testing.assert_close(_velocity(built), _velocity(loaded), rtol=1e-5, atol=1e-5)


def test_a_folder_without_the_second_expert_is_one_line(tiny_a14b_folder: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_a14b_folder, tmp_path / "broken")
    shutil.rmtree(folder / "transformer_2")
    with pytest.raises(DVError) as info:
        TinyWan22A14BBackbone(path=str(folder)).load("cpu")
    assert "\n" not in str(info.value) and "not a complete Wan 2.2 diffusers folder: no transformer_2" in str(
        info.value
    )


def test_offline_without_weights_is_one_line_naming_the_commands_and_parts(hf_cache: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        Wan22A14BBackbone().load("cpu")
    message, hint = str(info.value), info.value.hint
    assert "\n" not in message and A14B_ID in message and OPEN_CLIP_ID in message
    assert hint is not None and f"hf download {A14B_ID} " in hint and f"hf download {OPEN_CLIP_ID} " in hint
    assert "transformer_2/" in hint  # the low-noise expert is fetched too
    with pytest.raises(MissingWeightsError, match=f"hf download {A14B_ID}"):
        Wan22A14BBackbone().fingerprint()


@pytest.mark.slow  # imports open_clip for the cached appearance encoder
def test_found_in_the_hugging_face_cache_offline(
    tiny_a14b_folder: Path, open_clip_folder: Path, hf_cache: Path, put_in_cache: Callable[..., Path]
) -> None:
    """The tiny model under the real repository's name: `wan2.2-a14b` itself finds,
    fingerprints and loads both experts without the network; only what is missing is named."""
    snapshot = put_in_cache(hf_cache, A14B_ID, COMMIT, tiny_a14b_folder)
    shutil.rmtree(snapshot / "image_encoder")  # the hub repository has none
    backbone = Wan22A14BBackbone()
    with pytest.raises(MissingWeightsError) as info:
        backbone.load("cpu")
    assert OPEN_CLIP_ID in str(info.value) and A14B_ID not in str(info.value)
    put_in_cache(hf_cache, OPEN_CLIP_ID, COMMIT, open_clip_folder)
    found = backbone.fingerprint()
    assert (found.backbone, found.model_id, found.revision) == ("wan2.2-a14b", A14B_ID, COMMIT)
    parts = backbone.load("cpu")
    assert parts.family.name == "wan-dit-experts" and parts.codec.channels == 16
    torch.testing.assert_close(_velocity(parts), _velocity(TinyWan22A14BBackbone().load("cpu")), rtol=1e-5, atol=1e-5)
    assert not Wan22A14BBackbone.same_weights(Wan14BBackbone(random_weights=True).fingerprint(), found)


def test_full_size_on_the_meta_device() -> None:
    model: Any = Wan22A14BBackbone().build_denoiser("meta")
    assert isinstance(model, WanExperts)
    per_expert = configs.TRANSFORMER_PARAMETERS["A14B"]
    assert sum(p.numel() for p in model.high.parameters()) == per_expert
    assert sum(p.numel() for p in model.parameters()) == 2 * per_expert
    sites = Wan22A14BBackbone().adapter_sites(model)
    assert len(sites) == 2 * 2 * 40 and {s.width for s in sites} == {5120}
    assert sites[0].path == "high.blocks.0" and sites[-1].path == "low.blocks.39"


def test_random_weights_build_on_the_meta_device() -> None:
    parts = build_random("A14B", "meta", torch.bfloat16, text_encoder_full_size=False)
    assert isinstance(parts.transformer, WanExperts)
    assert parts.transformer.low.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert parts.scheduler_config["flow_shift"] == 3.0
