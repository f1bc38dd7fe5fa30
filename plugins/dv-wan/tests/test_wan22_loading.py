"""Wan 2.2 TI2V-5B's weights: the tiny model saved with save_pretrained and loaded back from a
local folder (--backbone-path) and from a Hugging Face cache laid out on disk, offline; the
one-line error without weights; the full-size architecture on the meta device; fingerprints
that keep Wan 2.1's adapters off Wan 2.2."""

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
from dv_wan.backbones import TinyWan22Backbone, TinyWanBackbone, Wan22TI2V5BBackbone, WanBackbone
from dv_wan.loading import build_random, fingerprint, load_folder, locate
from dv_wan.tiny import TINY_WAN22_REVISION, save_tiny_wan, tiny_parts

WAN22_ID = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
WAN21_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
OPEN_CLIP_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
COMMIT = "5555555555aaaaaaaaaa5555555555aaaaaaaaaa"


@pytest.fixture(scope="module")
def tiny22_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Wan 2.2 as a WanPipeline folder with image_encoder/; tests that change it copy it."""
    return save_tiny_wan(tmp_path_factory.mktemp("tiny-wan22") / "pipeline", version="2.2")


def _velocity(parts: Any) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 48, 3, 2, 4, generator=g)
    with torch.no_grad():
        return parts.denoise(latents, torch.tensor([900.0, 100.0]), torch.randn(2, 32, 32, generator=g))


def test_the_saved_folder_is_a_ti2v_pipeline(tiny22_folder: Path) -> None:
    index = json.loads((tiny22_folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline" and index["expand_timesteps"] is True
    assert index.get("boundary_ratio") is None
    vae = json.loads((tiny22_folder / "vae" / "config.json").read_text())
    assert (vae["z_dim"], vae["patch_size"], vae["is_residual"], vae["scale_factor_spatial"]) == (48, 2, True, 16)
    assert vae["latents_std"] == configs.LATENTS_STD_22
    scheduler = json.loads((tiny22_folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["flow_shift"] == 5.0 and scheduler["_class_name"] == "UniPCMultistepScheduler"


def test_a_local_folder_loads_as_built(tiny22_folder: Path, tmp_path: Path) -> None:
    pipeline, appearance = locate(WAN22_ID, "main", str(tiny22_folder), "5B")
    loaded = load_folder(pipeline, appearance, "cpu", torch.float32, "5B")
    built = tiny_parts(version="2.2")
    for module in ("transformer", "vae", "text_encoder"):
        left, right = getattr(built, module).state_dict(), getattr(loaded, module).state_dict()
        assert all(torch.equal(v, right[k]) for k, v in left.items()), module
    parts = TinyWan22Backbone(path=str(tiny22_folder)).load("cpu")
    assert torch.equal(_velocity(parts), _velocity(TinyWan22Backbone().load("cpu")))
    local = TinyWan22Backbone(path=str(tiny22_folder)).fingerprint()
    assert local.model_id == "local" and local.revision.startswith("local-sha256:")
    assert TinyWan22Backbone().fingerprint().revision == TINY_WAN22_REVISION
    # Without scheduler/, a folder samples with TI2V-5B's published scheduler.
    folder = shutil.copytree(tiny22_folder, tmp_path / "no-scheduler")
    shutil.rmtree(folder / "scheduler")
    bare = load_folder(folder, folder / "image_encoder", "cpu", torch.float32, "5B")
    assert bare.scheduler_config == configs.SCHEDULER_CONFIG_22


def test_a_folder_of_the_other_wan_is_refused_before_loading(tiny22_folder: Path, tmp_path: Path) -> None:
    wan21 = save_tiny_wan(tmp_path / "wan21")
    with pytest.raises(DVError) as info:
        Wan22TI2V5BBackbone(path=str(wan21)).load("cpu")
    assert "\n" not in str(info.value)
    assert "holds a model whose VAE has 16 latent channels; Wan 2.2 5B has 48" in str(info.value)
    assert info.value.hint is not None and "--backbone wan or wan-14b" in info.value.hint
    with pytest.raises(DVError) as info:
        TinyWanBackbone(path=str(tiny22_folder)).load("cpu")
    assert "VAE has 48 latent channels; Wan 2.1 1.3B has 16" in str(info.value)
    assert info.value.hint is not None and "--backbone wan2.2-5b" in info.value.hint


def test_offline_without_weights_is_one_line_naming_both_commands() -> None:
    with pytest.raises(MissingWeightsError) as info:
        Wan22TI2V5BBackbone().load("cpu")
    error = info.value
    message = str(error)
    assert "\n" not in message
    assert (
        f"Wan 2.2 weights ({WAN22_ID}) and the ViT-H-14 appearance encoder ({OPEN_CLIP_ID}) are not in the Hugging Face cache"
        in message
    )
    assert error.hint is not None
    assert f"hf download {WAN22_ID} " in error.hint and f"hf download {OPEN_CLIP_ID} " in error.hint
    with pytest.raises(MissingWeightsError, match=f"hf download {WAN22_ID}"):
        Wan22TI2V5BBackbone().fingerprint()


@pytest.mark.slow  # imports open_clip for the cached appearance encoder
def test_found_in_the_hugging_face_cache_offline(
    tiny22_folder: Path, open_clip_folder: Path, hf_cache: Path, put_in_cache: Callable[..., Path]
) -> None:
    """The tiny model under the real repository's name, with a tiny OpenCLIP model under
    laion's: `wan2.2-5b` itself finds, fingerprints and loads them without the network."""
    snapshot = put_in_cache(hf_cache, WAN22_ID, COMMIT, tiny22_folder)
    shutil.rmtree(snapshot / "image_encoder")  # the hub repository has none
    backbone = Wan22TI2V5BBackbone()
    with pytest.raises(MissingWeightsError) as info:  # only the appearance encoder is missing
        backbone.load("cpu")
    assert OPEN_CLIP_ID in str(info.value) and WAN22_ID not in str(info.value)
    put_in_cache(hf_cache, OPEN_CLIP_ID, COMMIT, open_clip_folder)

    found = backbone.fingerprint()
    assert (found.backbone, found.model_id, found.revision) == ("wan2.2-5b", WAN22_ID, COMMIT)
    assert locate(WAN22_ID, "main", None, "5B")[0] == snapshot
    parts = backbone.load("cpu")
    assert parts.codec.channels == 48 and parts.family.name == "wan-dit-token-t"
    assert torch.equal(_velocity(parts), _velocity(TinyWan22Backbone().load("cpu")))
    assert fingerprint("wan2.2-5b", WAN22_ID, "main", str(snapshot), False, "5B") == found  # a snapshot as a path


def test_wan_21_adapters_do_not_fit_wan_22(
    tiny22_folder: Path, tmp_path: Path, put_in_cache: Callable[..., Path]
) -> None:
    """The same commit in both caches still gives fingerprints that differ in backbone and id,
    so compose refuses a Wan 2.1 adapter on Wan 2.2 (and mixing the two)."""
    cache = tmp_path / "hf" / "hub"
    put_in_cache(cache, WAN22_ID, COMMIT, tiny22_folder)
    put_in_cache(cache, WAN21_ID, COMMIT, save_tiny_wan(tmp_path / "wan21"))
    wan21, wan22 = WanBackbone().fingerprint(), Wan22TI2V5BBackbone().fingerprint()
    assert wan21.revision == wan22.revision == COMMIT
    assert not Wan22TI2V5BBackbone.same_weights(wan21, wan22) and not WanBackbone.same_weights(wan22, wan21)
    assert TinyWanBackbone().fingerprint() != TinyWan22Backbone().fingerprint()


def test_full_size_on_the_meta_device() -> None:
    from diffusers import AutoencoderKLWan

    def count(module: Any) -> int:
        return sum(p.numel() for p in module.parameters())

    transformer: Any = Wan22TI2V5BBackbone().build_denoiser("meta")
    assert count(transformer) == configs.TRANSFORMER_PARAMETERS["5B"] == 4_999_787_712
    config = transformer.config
    assert (config.num_attention_heads * config.attention_head_dim, config.num_layers, config.ffn_dim) == (
        3072,
        30,
        14336,
    )
    assert config.in_channels == config.out_channels == 48
    with torch.device("meta"):
        vae: Any = AutoencoderKLWan(**configs.VAE22_CONFIG)
    assert count(vae) == configs.VAE22_PARAMETERS
    assert len(configs.LATENTS_MEAN_22) == len(configs.LATENTS_STD_22) == vae.config.z_dim == 48
    assert configs.SCHEDULER_CONFIG_22 == {**configs.SCHEDULER_CONFIG, "flow_shift": 5.0}


@pytest.mark.slow  # builds the 5.7B text encoder's and ViT-H's architectures (without memory)
def test_random_weights_build_on_the_meta_device() -> None:
    parts = Wan22TI2V5BBackbone(random_weights=True).load("meta", torch.bfloat16)
    assert sum(p.numel() for p in parts.denoiser.parameters()) == configs.TRANSFORMER_PARAMETERS["5B"]
    assert parts.codec.channels == 48 and parts.codec.spatial_factor == 16
    assert parts.denoiser.scale_shift_table.dtype == torch.float32  # type: ignore[union-attr]
    fp = Wan22TI2V5BBackbone(random_weights=True).fingerprint()
    assert (fp.model_id, fp.revision, fp.random_weights) == (WAN22_ID, "random", True)
    reduced = build_random("5B", "meta", torch.bfloat16, text_encoder_full_size=False)
    assert reduced.scheduler_config["flow_shift"] == 5.0 and reduced.vae.config.z_dim == 48
