"""Wan 2.1's weight-loading layer, run for real on the tiny Wan saved with save_pretrained: from a
local folder (--backbone-path) and from a Hugging Face cache laid out on disk. Offline
throughout; the full-size architectures are only ever built on the meta device."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from dreamvideo_cli.errors import DVError, MissingWeightsError
from dreamvideo_cli.hub import list_files
from dv_wan import configs
from dv_wan.loading import (
    PIPELINE_LAYOUT,
    REDUCED_TEXT_ENCODER_LAYERS,
    WanParts,
    build_random,
    fingerprint,
    load_folder,
    locate,
    wan_sources,
)
from dv_wan.tiny import (
    TINY_APPEARANCE_DIM,
    TINY_WAN_REVISION,
    save_tiny_wan,
    tiny_parts,
)

WAN_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
OPEN_CLIP_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
WAN_COMMIT = "0123456789abcdef0123456789abcdef01234567"
OPEN_CLIP_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Wan as a WanPipeline folder with image_encoder/, written once per session;
    tests that change it work on a copy."""
    return save_tiny_wan(tmp_path_factory.mktemp("tiny-wan") / "pipeline")


def outputs(parts: WanParts) -> dict[str, torch.Tensor]:
    """One call of every part, on fixed inputs, the way the engine uses them."""
    g = torch.Generator().manual_seed(1)
    tokens = parts.tokenizer(
        ["a photo of a dog", "a red toy car on the beach"],
        padding="max_length", max_length=parts.tokenizer.model_max_length, truncation=True, return_tensors="pt",
    )  # fmt: skip
    dtype = parts.transformer.dtype
    with torch.no_grad():
        context = parts.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        latents = torch.randn(2, 16, 3, 4, 4, generator=g)
        velocity = parts.transformer(
            latents.to(dtype), timestep=torch.tensor([900.0, 100.0]), encoder_hidden_states=context
        ).sample
        video = parts.vae.decode(latents).sample
        images = parts.appearance(torch.rand(2, 3, 40, 56, generator=g))
    return {"context": context, "velocity": velocity, "video": video, "images": images}


def check_same(a: WanParts, b: WanParts) -> None:
    for key, value in outputs(a).items():
        assert torch.equal(value, outputs(b)[key]), key
    assert a.scheduler_config["flow_shift"] == b.scheduler_config["flow_shift"] == 3.0
    for module in ("transformer", "vae", "text_encoder"):
        left, right = getattr(a, module).state_dict(), getattr(b, module).state_dict()
        assert {k: v.dtype for k, v in left.items()} == {k: v.dtype for k, v in right.items()}, module


# --- the tiny model ------------------------------------------------------------------------------


def test_the_tiny_tokenizer_is_t5_like() -> None:
    parts = tiny_parts()
    tok = parts.tokenizer
    ids = tok("a photo of a dog").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["▁a", "▁photo", "▁of", "▁a", "▁dog", "</s>"]
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok.unk_token_id not in tok("Zebras, 3 of them!").input_ids  # rare words fall back to characters
    batch = tok(
        ["a dog", "a cat walking in the snow"],
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    assert batch.input_ids.shape == (2, tok.model_max_length)
    assert batch.attention_mask.sum(1).tolist() == [3, 7]
    assert batch.input_ids[0, 3:].eq(0).all()  # padded with <pad>
    rows = parts.text_encoder.get_input_embeddings().num_embeddings
    assert len(tok) < rows  # like T5: more embedding rows than ids
    assert tok.add_tokens(["<dog>"]) == 1
    new_id = tok.convert_tokens_to_ids("<dog>")
    assert new_id < rows
    assert tok("a <dog> walking").input_ids == [
        tok.convert_tokens_to_ids("▁a"),
        new_id,
        tok.convert_tokens_to_ids("▁walking"),
        1,
    ]


def test_the_tiny_model_is_seeded_fast_and_compresses_like_wan() -> None:
    a, b = tiny_parts(), tiny_parts()
    for module in ("transformer", "vae", "text_encoder", "appearance"):
        left, right = getattr(a, module).state_dict(), getattr(b, module).state_dict()
        assert all(torch.equal(v, right[k]) for k, v in left.items()), module
    latents = torch.randn(2, 16, 3, 4, 4)  # 9 frames at 32x32
    context = torch.randn(2, 32, 32)
    with torch.no_grad():
        a.transformer(latents, timestep=torch.tensor([500.0, 500.0]), encoder_hidden_states=context)  # warm-up
        start = time.perf_counter()
        out = a.transformer(latents, timestep=torch.tensor([500.0, 500.0]), encoder_hidden_states=context).sample
        elapsed = time.perf_counter() - start
        assert out.shape == latents.shape
        assert elapsed < 0.5, elapsed
        z = a.vae.encode(torch.rand(1, 3, 9, 32, 32) * 2 - 1).latent_dist.mode()
    assert z.shape == (1, 16, 3, 4, 4)  # 4x in time with the first frame alone, 8x in space
    assert a.vae.dtype == torch.float32 and not any(p.requires_grad for p in a.transformer.parameters())
    assert a.appearance(torch.rand(1, 3, 32, 32)).shape == (1, TINY_APPEARANCE_DIM)
    assert TINY_WAN_REVISION == "tiny-wan-v1-seed0"


def test_save_and_load_round_trip(tiny_folder: Path) -> None:
    files = list_files(tiny_folder)
    assert {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/tokenizer.json",
        "image_encoder/config.json",
    } <= files
    assert json.loads((tiny_folder / "model_index.json").read_text())["_class_name"] == "WanPipeline"
    pipeline, appearance = locate(WAN_ID, "main", str(tiny_folder))
    assert (pipeline, appearance) == (tiny_folder, tiny_folder / "image_encoder")
    check_same(tiny_parts(), load_folder(pipeline, appearance, "cpu", torch.float32))


def test_round_trip_in_bfloat16_keeps_the_fp32_modules(tiny_folder: Path) -> None:
    built, loaded = (
        tiny_parts(dtype=torch.bfloat16),
        load_folder(tiny_folder, tiny_folder / "image_encoder", "cpu", torch.bfloat16),
    )
    check_same(built, loaded)
    assert loaded.transformer.scale_shift_table.dtype == torch.float32  # diffusers' _keep_in_fp32_modules
    assert loaded.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert loaded.text_encoder.dtype == torch.bfloat16 and loaded.vae.dtype == torch.float32


def test_the_local_fingerprint_follows_the_content_not_the_place(tiny_folder: Path, tmp_path: Path) -> None:
    before = fingerprint("wan", WAN_ID, "main", str(tiny_folder), False)
    assert before.model_id == "local" and before.revision.startswith("local-sha256:") and not before.random_weights
    moved = shutil.copytree(tiny_folder, tmp_path / "elsewhere")
    assert fingerprint("wan", WAN_ID, "main", str(moved), False) == before
    (moved / "scheduler" / "scheduler_config.json").write_text("{}")  # how one samples, not the weights
    assert fingerprint("wan", WAN_ID, "main", str(moved), False) == before
    config = moved / "transformer" / "config.json"
    config.write_text(config.read_text().replace('"num_layers": 2', '"num_layers": 3'))
    assert fingerprint("wan", WAN_ID, "main", str(moved), False) != before
    random = fingerprint("wan", WAN_ID, "main", None, True)
    assert (random.model_id, random.revision, random.random_weights) == (WAN_ID, "random", True)


# --- local folders and the cache -------------------------------------------------------------------


def test_an_incomplete_folder_is_one_line_naming_what_is_missing(tiny_folder: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_folder, tmp_path / "broken")
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(folder / "tokenizer")
    (folder / "image_encoder" / "model.safetensors").unlink()
    with pytest.raises(DVError) as info:
        locate(WAN_ID, "main", str(folder))
    assert not isinstance(info.value, MissingWeightsError)
    message = str(info.value)
    assert "\n" not in message
    assert (
        f"--backbone-path {folder} is not a complete Wan 2.1 diffusers folder: no transformer, tokenizer, image_encoder/ weights"
        in message
    )
    assert "transformer/, vae/, text_encoder/" in message
    with pytest.raises(DVError, match="is not a folder"):
        locate(WAN_ID, "main", str(tmp_path / "nowhere"))
    with pytest.raises(DVError, match="is not a folder"):
        fingerprint("wan", WAN_ID, "main", str(tmp_path / "nowhere"), False)


def test_offline_with_an_empty_cache(hf_cache: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        locate(WAN_ID, "main", None)
    error = info.value
    message = str(error)
    assert "\n" not in message
    assert (
        f"Wan 2.1 weights ({WAN_ID}) and the ViT-H-14 appearance encoder ({OPEN_CLIP_ID}) are not in the Hugging Face cache {hf_cache} and HF_HUB_OFFLINE is set"
        in message
    )
    assert (
        error.hint is not None
        and f"hf download {WAN_ID} " in error.hint
        and f"hf download {OPEN_CLIP_ID} " in error.hint
    )
    # The shards are named: both repositories split the transformer and the text encoder.
    for pattern in (
        "transformer/diffusion_pytorch_model-*-of-*.safetensors",
        "text_encoder/model.safetensors.index.json",
        "tokenizer/*",
    ):
        assert f"--include '{pattern}'" in error.hint
    with pytest.raises(MissingWeightsError, match=f"hf download {WAN_ID}"):  # no revision can be named
        fingerprint("wan", WAN_ID, "main", None, False)
    with pytest.raises(MissingWeightsError, match=r"hf download Wan-AI/Wan2.1-T2V-14B-Diffusers --revision v1 "):
        locate(configs.HUB_IDS["14B"], "v1", None)


@pytest.mark.slow  # imports open_clip (a few seconds)
def test_found_in_the_hugging_face_cache_offline(
    tiny_folder: Path, open_clip_folder: Path, hf_cache: Path, put_in_cache: Callable[..., Path]
) -> None:
    snapshot = put_in_cache(hf_cache, WAN_ID, WAN_COMMIT, tiny_folder)
    shutil.rmtree(snapshot / "image_encoder")  # the hub repository has none
    with pytest.raises(MissingWeightsError) as info:  # only the OpenCLIP repository is missing
        locate(WAN_ID, "main", None)
    assert OPEN_CLIP_ID in str(info.value) and f"hf download {WAN_ID}" not in str(info.value)
    encoder_snapshot = put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, open_clip_folder)
    pipeline, appearance = locate(WAN_ID, "main", None)
    assert (pipeline, appearance) == (snapshot, encoder_snapshot)
    found = fingerprint("wan", WAN_ID, "main", None, False)
    assert (found.model_id, found.revision) == (WAN_ID, WAN_COMMIT)
    assert fingerprint("wan", WAN_ID, WAN_COMMIT, None, False) == found  # a pinned commit
    assert fingerprint("wan", WAN_ID, "main", str(snapshot), False) == found  # --backbone-path to a snapshot
    parts = load_folder(pipeline, appearance, "cpu", torch.float32)
    assert parts.appearance(torch.rand(2, 3, 40, 56)).shape == (2, 16)
    assert parts.scheduler_config["_class_name"] == "UniPCMultistepScheduler"
    # A local folder without image_encoder/ takes the cached OpenCLIP model.
    assert locate(WAN_ID, "main", str(snapshot)) == (snapshot, encoder_snapshot)


def test_a_local_folder_without_image_encoder_needs_the_cached_one(
    tiny_folder: Path, tmp_path: Path, hf_cache: Path
) -> None:
    folder = shutil.copytree(tiny_folder, tmp_path / "local")
    shutil.rmtree(folder / "image_encoder")
    with pytest.raises(MissingWeightsError) as info:
        locate(WAN_ID, "main", str(folder))
    message = str(info.value)
    assert OPEN_CLIP_ID in message and WAN_ID not in message
    assert (
        f"put an OpenCLIP checkpoint (open_clip_config.json and open_clip_model.safetensors) in {folder / 'image_encoder'}"
        in message
    )


def test_a_sharded_repository_is_downloaded_and_loaded(
    tiny_folder: Path, tmp_path: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online, with huggingface_hub faked: the hub's transformer and text encoder come in
    shards; exactly the files the layout names are fetched, and they load."""
    import huggingface_hub
    from diffusers import WanTransformer3DModel
    from transformers import UMT5EncoderModel

    repo = shutil.copytree(tiny_folder, tmp_path / "repo", ignore=shutil.ignore_patterns("image_encoder"))
    for folder, cls in (("transformer", WanTransformer3DModel), ("text_encoder", UMT5EncoderModel)):
        model: Any = cls.from_pretrained(repo / folder)
        shutil.rmtree(repo / folder)
        model.save_pretrained(repo / folder, max_shard_size="20KB")
    (repo / "README.md").write_text("not needed")
    files = list_files(repo)
    assert "transformer/diffusion_pytorch_model.safetensors.index.json" in files
    assert "text_encoder/model.safetensors.index.json" in files
    fetched: list[str] = []

    class FakeApi:
        def list_repo_files(self, repo_id: str, revision: str | None = None) -> list[str]:
            assert repo_id == WAN_ID
            return sorted(files)

    def fake_download(repo_id: str, **kwargs: Any) -> str:
        from fnmatch import fnmatch

        snapshot = Path(kwargs["cache_dir"]) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / WAN_COMMIT
        for rel in files:
            if any(fnmatch(rel, p) for p in kwargs["allow_patterns"]):
                fetched.append(rel)
                (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(repo / rel, snapshot / rel)
        (snapshot.parent.parent / "refs").mkdir(exist_ok=True)
        (snapshot.parent.parent / "refs" / "main").write_text(WAN_COMMIT)
        return str(snapshot)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert fingerprint("wan", WAN_ID, "main", None, False).revision == "main"  # not cached yet
    source = wan_sources(WAN_ID, "main")[0]
    snapshot = source.download()
    assert sorted(fetched) == sorted(files - {"README.md"})
    assert fingerprint("wan", WAN_ID, "main", None, False).revision == WAN_COMMIT
    check_same(tiny_parts(), load_folder(snapshot, tiny_folder / "image_encoder", "cpu", torch.float32))


def test_the_layout_plans_sharded_repositories() -> None:
    files = {
        "model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
        "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors.index.json",
        "text_encoder/model-00001-of-00005.safetensors",
    }  # fmt: skip
    plan = PIPELINE_LAYOUT.plan(files)
    assert plan.missing == []
    assert {"transformer/diffusion_pytorch_model-*-of-*.safetensors", "text_encoder/model-*-of-*.safetensors"} <= set(
        plan.patterns
    )
    assert PIPELINE_LAYOUT.plan(files - {"vae/config.json", "tokenizer/tokenizer.json"}).missing == ["vae", "tokenizer"]
    assert [s.repo_id for s in wan_sources(WAN_ID, "main")] == [WAN_ID, OPEN_CLIP_ID]


# --- the full-size architectures, on the meta device ---------------------------------------------


def count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_parameter_counts() -> None:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    small: Any
    big: Any
    defaults: Any
    vae: Any
    with torch.device("meta"):
        small = WanTransformer3DModel(**configs.TRANSFORMER_CONFIGS["1.3B"])
        big = WanTransformer3DModel(**configs.TRANSFORMER_CONFIGS["14B"])
        defaults = WanTransformer3DModel()
        vae = AutoencoderKLWan(**configs.VAE_CONFIG)
        text_encoder = UMT5EncoderModel(UMT5Config(**configs.TEXT_ENCODER_CONFIG))
    assert count(small) == 1_418_996_800 == configs.TRANSFORMER_PARAMETERS["1.3B"]
    assert count(big) == 14_288_491_584 == configs.TRANSFORMER_PARAMETERS["14B"]
    assert round(count(vae) / 1e6, 1) == 126.9 and count(vae) == configs.VAE_PARAMETERS
    assert count(text_encoder) == configs.TEXT_ENCODER_PARAMETERS
    assert round(count(text_encoder) / 1e9, 2) == 5.68
    assert text_encoder.get_input_embeddings().num_embeddings == 256_384
    # The class defaults are the 14B model.
    assert {k: v for k, v in defaults.config.items() if k in configs.TRANSFORMER_CONFIGS["14B"]} == {
        k: v for k, v in big.config.items() if k in configs.TRANSFORMER_CONFIGS["14B"]
    }
    assert small.config.text_dim == text_encoder.config.d_model == 4096
    assert list(vae.config.latents_std) == configs.LATENTS_STD and len(configs.LATENTS_MEAN) == 16


def test_the_default_scheduler_is_unipc_over_flow_sigmas() -> None:
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler.from_config(configs.SCHEDULER_CONFIG)
    assert scheduler.config.prediction_type == "flow_prediction" and scheduler.config.use_flow_sigmas
    assert scheduler.config.flow_shift == 3.0 and scheduler.config.num_train_timesteps == 1000
    assert configs.TOKENIZER_MAX_LENGTH == 512


@pytest.mark.slow  # imports open_clip and builds three full-size architectures (without memory)
def test_build_random_on_the_meta_device() -> None:
    full = build_random("14B", "meta", torch.bfloat16)
    assert count(full.transformer) == configs.TRANSFORMER_PARAMETERS["14B"]
    assert count(full.text_encoder) == configs.TEXT_ENCODER_PARAMETERS
    assert count(full.appearance) == 632_076_800 and full.appearance.image_size == 224
    assert full.transformer.scale_shift_table.dtype == torch.float32  # kept as from_pretrained keeps it
    assert full.transformer.blocks[0].ffn.net[0].proj.weight.dtype == torch.bfloat16
    assert full.vae.dtype == torch.float32 and full.text_encoder.dtype == torch.bfloat16
    assert full.tokenizer.model_max_length == 512 and full.scheduler_config == configs.SCHEDULER_CONFIG
    reduced = build_random("1.3B", "meta", torch.bfloat16, text_encoder_full_size=False)
    assert count(reduced.transformer) == configs.TRANSFORMER_PARAMETERS["1.3B"]
    assert reduced.text_encoder.config.num_layers == REDUCED_TEXT_ENCODER_LAYERS
    assert reduced.text_encoder.config.d_model == reduced.transformer.config.text_dim
    assert reduced.text_encoder.get_input_embeddings().num_embeddings == 256_384
    assert count(reduced.text_encoder) < count(full.text_encoder) // 3


def test_loading_imports_no_heavy_library() -> None:
    """The backbone classes import this layer at registration, which must stay cheap."""
    code = (
        "import sys, dv_wan.loading, dv_wan.configs; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'open_clip', 'huggingface_hub') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_fetch_weights_names_every_missing_repository_before_a_run(
    tiny_folder: Path, hf_cache: Path, put_in_cache: Callable[..., Path]
) -> None:
    """Issue 31, item 5: learning asks `fetch_weights` before it makes a run folder."""
    from dv_wan.backbones import TinyWanBackbone, WanBackbone

    snapshot = put_in_cache(hf_cache, WAN_ID, WAN_COMMIT, tiny_folder)
    shutil.rmtree(snapshot / "image_encoder")
    with pytest.raises(MissingWeightsError, match=OPEN_CLIP_ID):  # the fingerprint alone would not have said
        WanBackbone().fetch_weights()
    WanBackbone(random_weights=True).fetch_weights()
    TinyWanBackbone().fetch_weights()  # built on the fly: nothing to fetch
