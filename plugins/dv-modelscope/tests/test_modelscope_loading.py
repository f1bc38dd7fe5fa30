"""The real loading code, run on tiny components saved with save_pretrained / save_for_hf:
from a local folder (--backbone-path) and from a Hugging Face cache laid out on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from conftest import (
    FAKE_COMMIT,
    MODELSCOPE_ID,
    OPEN_CLIP_COMMIT,
    OPEN_CLIP_ID,
    TINY_OPEN_CLIP_CFG,
    put_in_cache,
)
from dreamvideo_cli.backbone import Components
from dreamvideo_cli.errors import DVError
from dv_modelscope.backbones import ModelScopeBackbone, ZeroscopeBackbone


def check_components(parts: Components) -> None:
    """Every part works together the way the engine uses them."""
    ids = parts.tokenizer(
        ["a dog"],
        padding="max_length",
        max_length=parts.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    context = parts.text_encoder(ids)[0]  # [1, 77, D]
    assert context.shape[:2] == (1, 77)
    latents = torch.randn(1, 4, 2, 8, 8)
    noise = parts.denoiser(latents, torch.tensor([10]), encoder_hidden_states=context).sample
    assert noise.shape == latents.shape
    images = parts.vae.decode(latents[:, :, 0] / parts.codec.scale_factor).sample  # type: ignore[attr-defined]
    assert images.shape[1] == 3
    embeds = parts.appearance_encoder(torch.rand(3, 3, 40, 56))
    assert embeds.shape == (3, TINY_OPEN_CLIP_CFG["embed_dim"])
    assert parts.codec.scale_factor == pytest.approx(0.18215)  # type: ignore[attr-defined]
    assert (parts.codec.temporal_factor, parts.codec.channels) == (1, 4)
    assert not any(p.requires_grad for p in parts.denoiser.parameters())
    assert parts.denoiser.dtype == torch.float32  # the fp16 variant was upcast to the requested dtype


def test_load_from_a_local_folder(local_folder: Path) -> None:
    backbone = ModelScopeBackbone(path=str(local_folder))
    parts = backbone.load("cpu")
    check_components(parts)
    fingerprint = backbone.fingerprint()
    assert fingerprint.model_id == "local" and not fingerprint.random_weights
    assert fingerprint.revision.startswith("local-sha256:") and len(fingerprint.revision) == len("local-sha256:") + 12


def test_the_local_fingerprint_follows_the_content_not_the_place(local_folder: Path, tmp_path: Path) -> None:
    before = ModelScopeBackbone(path=str(local_folder)).fingerprint()
    moved = tmp_path / "elsewhere"
    shutil.copytree(local_folder, moved)
    assert ModelScopeBackbone(path=str(moved)).fingerprint() == before
    config = moved / "unet" / "config.json"
    data = json.loads(config.read_text())
    data["norm_eps"] = 1e-6
    config.write_text(json.dumps(data))
    assert ModelScopeBackbone(path=str(moved)).fingerprint() != before
    weights = moved / "vae" / "diffusion_pytorch_model.safetensors"
    shutil.copy(local_folder / "unet" / "config.json", config)
    assert ModelScopeBackbone(path=str(moved)).fingerprint() == before
    with open(weights, "r+b") as f:  # the same size, other weights
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    assert ModelScopeBackbone(path=str(moved)).fingerprint() != before


def test_the_appearance_encoder_is_open_clips_encode_image(local_folder: Path) -> None:
    """Pooled, projected and not normalised, as the authors' FrozenOpenCLIPVisualEmbedder."""
    import open_clip

    from dreamvideo_cli.appearance import clip_preprocess

    parts = ModelScopeBackbone(path=str(local_folder)).load("cpu")
    reference = open_clip.create_model("local-dir:" + str(local_folder / "image_encoder")).eval()
    images = torch.rand(2, 3, 48, 64)
    expected = reference.encode_image(clip_preprocess(images, 32))
    assert torch.allclose(parts.appearance_encoder(images), expected, atol=1e-5)
    assert not torch.allclose(expected.norm(dim=-1), torch.ones(2))


def test_a_transformers_image_encoder_folder_also_works(local_folder: Path) -> None:
    from transformers import CLIPVisionModelWithProjection

    from dreamvideo_cli.testing import tiny_vision_config

    shutil.rmtree(local_folder / "image_encoder")
    CLIPVisionModelWithProjection(tiny_vision_config()).save_pretrained(local_folder / "image_encoder")
    parts = ModelScopeBackbone(path=str(local_folder)).load("cpu")
    assert parts.appearance_encoder(torch.rand(1, 3, 32, 32)).shape == (1, tiny_vision_config().projection_dim)


def test_an_incomplete_local_folder_is_one_clear_error(local_folder: Path) -> None:
    shutil.rmtree(local_folder / "vae")
    with pytest.raises(DVError, match=r"not a complete diffusers folder: no vae"):
        ModelScopeBackbone(path=str(local_folder)).load("cpu")
    with pytest.raises(DVError, match="is not a folder"):
        ModelScopeBackbone(path=str(local_folder / "nope")).load("cpu")


def test_load_from_the_hugging_face_cache_offline(tiny_parts: tuple[Path, Path], hf_cache: Path) -> None:
    pipeline, open_clip_folder = tiny_parts
    put_in_cache(hf_cache, MODELSCOPE_ID, FAKE_COMMIT, pipeline)
    put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, open_clip_folder)
    backbone = ModelScopeBackbone()
    fingerprint = backbone.fingerprint()  # before loading: read from refs/main, no network
    assert (fingerprint.backbone, fingerprint.model_id, fingerprint.revision) == (
        "modelscope",
        MODELSCOPE_ID,
        FAKE_COMMIT,
    )
    check_components(backbone.load("cpu"))
    assert backbone.fingerprint() == fingerprint


def test_load_from_a_cache_filled_under_the_old_id_offline(tiny_parts: tuple[Path, Path], hf_cache: Path) -> None:
    """`damo-vilab/text-to-video-ms-1.7b` is the repository's old id; many caches hold it so.
    Offline, it is found there, loaded, and the fingerprint names where it was found."""
    pipeline, open_clip_folder = tiny_parts
    old_id = "damo-vilab/text-to-video-ms-1.7b"
    snapshot = put_in_cache(hf_cache, old_id, FAKE_COMMIT, pipeline)
    put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, open_clip_folder)
    backbone = ModelScopeBackbone()
    fingerprint = backbone.fingerprint()
    assert (fingerprint.model_id, fingerprint.revision) == (old_id, FAKE_COMMIT)
    check_components(backbone.load("cpu"))
    assert backbone.fingerprint() == fingerprint
    assert ModelScopeBackbone(path=str(snapshot)).fingerprint() == fingerprint
    assert sorted(p.name for p in hf_cache.iterdir()) == [
        "models--damo-vilab--text-to-video-ms-1.7b",
        "models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K",
    ]


def test_a_sharded_fp16_local_folder_loads(tiny_parts: tuple[Path, Path], tmp_path: Path) -> None:
    """A folder written by save_pretrained(variant="fp16", max_shard_size=...): the libraries
    name the index `<weights>.index.fp16.json` and the shards `<name>.fp16-0000k-of-0000n`."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel

    pipeline, open_clip_folder = tiny_parts
    folder = tmp_path / "sharded"
    shutil.copytree(pipeline / "tokenizer", folder / "tokenizer")
    shutil.copy(pipeline / "model_index.json", folder)
    shutil.copytree(open_clip_folder, folder / "image_encoder")
    originals: dict[str, Any] = {
        "unet": UNet3DConditionModel.from_pretrained(pipeline / "unet", variant="fp16"),
        "vae": AutoencoderKL.from_pretrained(pipeline / "vae"),
        "text_encoder": CLIPTextModel.from_pretrained(pipeline / "text_encoder"),
    }
    for name, model in originals.items():
        model.half().save_pretrained(folder / name, variant="fp16", max_shard_size="40KB")
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*.json")}
    assert {
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "vae/diffusion_pytorch_model.safetensors.index.fp16.json",
        "text_encoder/model.safetensors.index.fp16.json",
    } <= written
    assert any(folder.glob("text_encoder/model.fp16-00001-of-*.safetensors"))
    assert not any(folder.glob("*/*.fp16.safetensors"))  # sharded: no single file
    parts = ModelScopeBackbone(path=str(folder)).load("cpu")
    check_components(parts)
    for name, loaded in (("unet", parts.denoiser), ("vae", parts.vae), ("text_encoder", parts.text_encoder)):
        expected = originals[name].state_dict()
        for key, value in loaded.state_dict().items():
            torch.testing.assert_close(value, expected[key].float(), msg=f"{name}.{key}")


def test_a_cache_snapshot_as_backbone_path_keeps_the_hub_fingerprint(
    tiny_parts: tuple[Path, Path], hf_cache: Path
) -> None:
    pipeline, open_clip_folder = tiny_parts
    snapshot = put_in_cache(hf_cache, MODELSCOPE_ID, FAKE_COMMIT, pipeline)
    put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, open_clip_folder)
    assert ModelScopeBackbone(path=str(snapshot)).fingerprint() == ModelScopeBackbone().fingerprint()


def test_zeroscope_reads_pickled_weights(tiny_parts: tuple[Path, Path], hf_cache: Path) -> None:
    """Zeroscope's repository has .bin files only; diffusers reads them with weights_only."""
    from diffusers import AutoencoderKL, UNet3DConditionModel

    pipeline, open_clip_folder = tiny_parts
    snapshot = put_in_cache(hf_cache, ZeroscopeBackbone.hub_id, FAKE_COMMIT, pipeline)
    put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, open_clip_folder)
    for folder, cls in (("unet", UNet3DConditionModel), ("vae", AutoencoderKL)):
        model = cls.from_pretrained(pipeline / folder, variant="fp16" if folder == "unet" else None)
        shutil.rmtree(snapshot / folder)
        model.float().save_pretrained(snapshot / folder, safe_serialization=False)
        assert (snapshot / folder / "diffusion_pytorch_model.bin").is_file()
    parts = ZeroscopeBackbone().load("cpu")
    check_components(parts)
    assert ZeroscopeBackbone().fingerprint().model_id == "cerspense/zeroscope_v2_576w"


class TinyRandomBackbone(ModelScopeBackbone):
    """The --random-weights code path at test size: same code, tiny embedded configs."""

    name = "tiny-random-modelscope"
    unet_config: ClassVar[dict[str, Any]] = {}
    vae_config: ClassVar[dict[str, Any]] = {}
    text_encoder_config: ClassVar[dict[str, Any]] = {}
    appearance_arch = "dv-tiny-open-clip"  # registered with open_clip by the tiny_parts fixture


def test_random_weights(tiny_parts: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamvideo_cli.testing import tiny_text_config, tiny_unet_config, tiny_vae_config

    monkeypatch.setattr(TinyRandomBackbone, "unet_config", tiny_unet_config())
    monkeypatch.setattr(TinyRandomBackbone, "vae_config", tiny_vae_config())
    monkeypatch.setattr(TinyRandomBackbone, "text_encoder_config", tiny_text_config(49408).to_dict())
    backbone = TinyRandomBackbone(random_weights=True)
    fingerprint = backbone.fingerprint()
    assert fingerprint.random_weights and fingerprint.revision == "random" and fingerprint.model_id == MODELSCOPE_ID
    parts = backbone.load("cpu")
    check_components(parts)
    assert len(parts.tokenizer) == 49408  # CLIP's own vocabulary, rebuilt offline
    again = TinyRandomBackbone(random_weights=True).load("cpu")
    assert torch.equal(next(parts.denoiser.parameters()), next(again.denoiser.parameters()))  # seeded


def test_random_fingerprint_differs_from_a_real_one(tiny_parts: tuple[Path, Path], hf_cache: Path) -> None:
    pipeline, _ = tiny_parts
    put_in_cache(hf_cache, MODELSCOPE_ID, FAKE_COMMIT, pipeline)
    random = ModelScopeBackbone(random_weights=True).fingerprint()
    real = ModelScopeBackbone().fingerprint()
    assert random != real and random.backbone == real.backbone == "modelscope"


def test_clip_tokenizer_has_clips_ids() -> None:
    from dv_modelscope.text import clip_tokenizer

    tokenizer = clip_tokenizer()
    assert tokenizer("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert tokenizer.pad_token_id == 0 and tokenizer.model_max_length == 77
