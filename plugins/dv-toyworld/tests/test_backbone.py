from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dreamvideo_cli.errors import MissingWeightsError
from dv_toyworld import model, world
from dv_toyworld.backbone import PRETRAIN_COMMANDS, WEIGHTS_ENV, ToyWorldBackbone


def test_every_world_word_is_one_token() -> None:
    tok = model.toy_tokenizer()
    for word in world.VOCABULARY:
        assert len(tok.tokenize(word)) == 1, word
    caption = "a big red striped square slides left quickly on grass"
    assert len(tok(caption).input_ids) == len(caption.split()) + 2  # plus start and end


def test_unet_on_meta_and_adapter_sites() -> None:
    backbone = ToyWorldBackbone()
    unet = backbone.build_denoiser("meta")
    sites = backbone.adapter_sites(unet)
    kinds = {s.kind for s in sites}
    assert kinds == {"identity", "motion"}
    assert all(p.device.type == "meta" for p in unet.parameters())


def test_missing_weights_name_the_pretrain_command(tmp_path: Path) -> None:
    backbone = ToyWorldBackbone(path=str(tmp_path / "nope.safetensors"))
    with pytest.raises(MissingWeightsError) as info:
        backbone.load("cpu")
    assert "python -m dv_toyworld.pretrain" in str(info.value)
    nope = tmp_path / "nope.safetensors"
    first = tmp_path / "toyworld-8000.safetensors"
    assert all(c.format(first=first, path=nope) in str(info.value) for c in PRETRAIN_COMMANDS)
    with pytest.raises(MissingWeightsError):
        backbone.fingerprint()


def test_loads_weights_and_runs(weights_file: Path) -> None:
    backbone = ToyWorldBackbone(path=str(weights_file))
    fp = backbone.fingerprint()
    assert fp.backbone == "toyworld" and fp.revision == model.file_digest(weights_file)[:16]
    parts = backbone.load("cpu")
    # The space-to-depth "VAE" is lossless, with the engine's encode/decode API.
    x = torch.rand(2, 3, world.SIZE, world.SIZE) * 2 - 1
    z = parts.vae.encode(x).latent_dist.mean
    assert z.shape == (2, 48, 8, 8) and parts.codec.spatial_factor == 4
    assert torch.equal(parts.vae.decode(z).sample, x)
    ids = parts.tokenizer(
        ["a red circle on snow"], padding="max_length", max_length=parts.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    context = parts.text_encoder(ids)[0]
    assert context.shape == (1, model.MAX_TOKENS, parts.denoiser.config.cross_attention_dim)
    e = parts.appearance_encoder(torch.rand(3, 3, 64, 64))
    assert e.shape == (3, parts.appearance_dim)
    with torch.no_grad():
        eps = parts.denoiser(torch.randn(1, 48, 8, 8, 8), torch.tensor([500]), encoder_hidden_states=context).sample
    assert eps.shape == (1, 48, 8, 8, 8) and torch.isfinite(eps).all()


def test_subject_masks_map_exactly_onto_pixel_latents(weights_file: Path) -> None:
    """Each latent channel is one pixel, so a masked loss sees subject pixels only: the
    encoded mask is 1 exactly where the encoded image holds a subject pixel's colour."""
    parts = ToyWorldBackbone(path=str(weights_file)).load("cpu")
    mask = torch.zeros(1, 1, world.SIZE, world.SIZE)
    mask[..., 5:14, 9:11] = 1  # a thin bar: every latent cell it touches is mostly background
    image = torch.full((1, 3, world.SIZE, world.SIZE), -1.0)
    image[mask.expand(-1, 3, -1, -1) > 0] = 1.0
    z = parts.vae.encode(image).latent_dist.mean  # [1, 48, 8, 8]
    weights = parts.codec.mask_latents(mask, (8, 8))
    assert weights.shape == z.shape
    assert torch.equal(weights > 0, z > 0)
    # A real VAE's cells (the default) count as subject if any pixel under them is.
    parts.codec.exact_masks = None  # type: ignore[attr-defined]
    cells = parts.codec.mask_latents(mask, (8, 8))
    assert cells.shape == (1, 1, 8, 8) and int(cells.sum()) == 3  # pixel rows 4-7, 8-11, 12-15 of columns 8-11


def test_weights_round_trip(tmp_path: Path) -> None:
    parts = model.build(seed=3)
    path = tmp_path / "w.safetensors"
    model.save(path, parts, {"command": "test", "seed": "3"})
    fresh = model.build(seed=4)
    meta = model.load_into(path, fresh)
    assert meta["seed"] == "3" and meta["command"] == "test"
    a = dict(parts["unet"].named_parameters())["unet.conv_in.weight"]
    b = dict(fresh["unet"].named_parameters())["unet.conv_in.weight"]
    assert torch.allclose(a.half().float(), b)


def test_weights_env_points_at_another_file(weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_file))
    assert ToyWorldBackbone().weights_path() == weights_file


@pytest.mark.skipif(not model.WEIGHTS_FILE.is_file(), reason="toyworld weights not trained yet")
def test_committed_weights_record_their_command() -> None:
    from safetensors import safe_open

    with safe_open(str(model.WEIGHTS_FILE), framework="pt") as f:
        meta = f.metadata()
    assert meta["command"].startswith("python -m dv_toyworld.pretrain") and "--seed" in meta["command"]
    assert model.WEIGHTS_FILE.stat().st_size <= 20 * 2**20
    assert ToyWorldBackbone().fingerprint().revision == model.file_digest(model.WEIGHTS_FILE)[:16]


def test_registered() -> None:
    from dreamvideo_cli.plugins import get_backbone

    assert get_backbone("toyworld") is ToyWorldBackbone
    assert np.isclose(ToyWorldBackbone.schedule.beta_end, 0.02)


def test_pretraining_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    """A stopped run continued with --resume (what a session cut short does) ends with the
    same weights as one that never stopped: noise, data and optimizer state all carry over."""
    from safetensors.torch import load_file

    from dv_toyworld import pretrain

    common = ["--seed", "3", "--videos", "1", "--images", "1", "--warmup", "2", "--log-every", "100"]
    straight = tmp_path / "straight" / "w.safetensors"
    assert pretrain.main([*common, "--steps", "4", "--save-every", "4", "--out", str(straight)]) == 0
    resumed = tmp_path / "resumed" / "w.safetensors"
    assert pretrain.main([*common, "--steps", "2", "--save-every", "2", "--out", str(resumed)]) == 0
    assert pretrain.main([*common, "--steps", "4", "--save-every", "2", "--out", str(resumed), "--resume"]) == 0
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
