"""Loading the metric encoders: a local save/load round trip, and a clear line when offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamvideo_cli.errors import DVError, MissingWeightsError
from dreamvideo_cli.metrics import EvalSample
from dv_metrics import weights
from dv_metrics.encoders import DINOEncoder, OpenCLIPEncoder
from dv_metrics.metrics import ClipT, DinoI, TemporalConsistency
from dv_metrics.testing import (
    save_open_clip_folder,
    tiny_clip_model,
    tiny_clip_tokenizer,
    tiny_dino_model,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No network, and an empty Hugging Face cache, whatever this machine has downloaded."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv(weights.CLIP_PATH_ENV, raising=False)
    monkeypatch.delenv(weights.DINO_PATH_ENV, raising=False)
    monkeypatch.setattr(weights, "_shared", {})
    yield


def _frames() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (3, 36, 44, 3), dtype=np.uint8)


def test_open_clip_folder_round_trip(tmp_path: Path) -> None:
    model = tiny_clip_model(seed=5)
    folder = save_open_clip_folder(model, tmp_path / "clip")
    loaded = weights.load_clip_encoder("cpu", folder)
    original = OpenCLIPEncoder(model, tiny_clip_tokenizer())
    assert loaded.preprocess == original.preprocess
    frames = list(_frames())
    np.testing.assert_allclose(loaded.encode_images(frames), original.encode_images(frames), atol=1e-6)
    np.testing.assert_allclose(loaded.encode_text(["a dog"]), original.encode_text(["a dog"]), atol=1e-6)


def test_dino_folder_round_trip(tmp_path: Path) -> None:
    model = tiny_dino_model(seed=5)
    model.save_pretrained(tmp_path / "dino")
    loaded = weights.load_dino_encoder("cpu", tmp_path / "dino")
    original = DINOEncoder(model)
    frames = list(_frames())
    np.testing.assert_allclose(loaded.encode_images(frames), original.encode_images(frames), atol=1e-6)


def _hub_like_dino(seed: int = 5) -> Any:
    """The tiny ViT, its config set to facebook/dino-vits16's `layer_norm_eps: 1e-12`
    (https://huggingface.co/facebook/dino-vits16/blob/main/config.json)."""
    model = tiny_dino_model(seed=seed)
    model.config.layer_norm_eps = 1e-12
    return model


def _layer_norm_eps(model: Any) -> set[float]:
    import torch

    return {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}


def test_dino_is_built_with_the_authors_layer_norm_eps(tmp_path: Path) -> None:
    """DINO's own ViT-S/16 (vision_transformer.py, which the authors' metric script imports)
    uses LayerNorm(eps=1e-6); the hub's transformers config says 1e-12. Whatever the saved
    config says, every LayerNorm of the loaded model gets 1e-6."""
    _hub_like_dino().save_pretrained(tmp_path / "dino")
    assert '"layer_norm_eps": 1e-12' in (tmp_path / "dino" / "config.json").read_text()
    model = weights.load_dino_encoder("cpu", tmp_path / "dino").model
    assert weights.DINO_LAYER_NORM_EPS == 1e-6
    assert model.config.layer_norm_eps == 1e-6
    norms = [m for m in model.modules() if m.__class__.__name__ == "LayerNorm"]
    assert len(norms) == 2 * model.config.num_hidden_layers + 1  # before/after each block, and the final one
    assert _layer_norm_eps(model) == {1e-6}


def test_dino_from_the_hub_cache_gets_the_authors_eps_too(tmp_path: Path) -> None:
    """The same through the Hugging Face cache (as `hf download facebook/dino-vits16` leaves it)."""
    from huggingface_hub import constants

    commit = "0" * 40
    repo = Path(constants.HF_HUB_CACHE) / "models--facebook--dino-vits16"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    _hub_like_dino().save_pretrained(repo / "snapshots" / commit)
    model = weights.load_dino_encoder("cpu").model
    assert _layer_norm_eps(model) == {1e-6}


def test_metrics_load_once_per_process_from_the_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_open_clip_folder(tiny_clip_model(), tmp_path / "clip")
    tiny_dino_model().save_pretrained(tmp_path / "dino")
    monkeypatch.setenv(weights.CLIP_PATH_ENV, str(tmp_path / "clip"))
    monkeypatch.setenv(weights.DINO_PATH_ENV, str(tmp_path / "dino"))
    loads: list[str] = []
    real = weights.load_clip_encoder

    def counting(device: str, source: object = None) -> OpenCLIPEncoder:
        loads.append(device)
        return real(device, source)  # type: ignore[arg-type]

    monkeypatch.setattr(weights, "load_clip_encoder", counting)
    sample = EvalSample(_frames(), prompt="a dog", reference_images=[_frames()[0]])
    clip_t, t_cons = ClipT("cpu"), TemporalConsistency("cpu")
    assert clip_t.encoder is t_cons.encoder  # one CLIP for every CLIP metric
    clip_t.score(sample)
    t_cons.score(sample)
    assert loads == ["cpu"]
    assert 0.0 < DinoI("cpu").score(sample) <= 1.0


def test_offline_without_clip_weights_names_the_fetch_command() -> None:
    with pytest.raises(MissingWeightsError) as caught:
        TemporalConsistency("cpu").prepare()
    message = str(caught.value)
    assert "\n" not in message
    assert "hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors" in message
    assert weights.CLIP_PATH_ENV in message


def test_offline_without_dino_weights_names_the_fetch_command() -> None:
    with pytest.raises(MissingWeightsError) as caught:
        DinoI("cpu").prepare()
    message = str(caught.value)
    assert "\n" not in message
    assert "hf download facebook/dino-vits16 config.json pytorch_model.bin" in message


def test_cached_hub_file_is_used_offline(tmp_path: Path) -> None:
    """What `hf download` leaves in the cache is found without the network."""
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE) / "models--timm--vit_base_patch32_clip_224.openai"
    commit = "0" * 40
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    snapshot = cache / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / weights.CLIP_FILE).write_bytes(b"x")
    found = weights._hub_file(weights.CLIP_WEIGHTS, weights.CLIP_FILE)
    assert found == snapshot / weights.CLIP_FILE


def test_bad_local_paths_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(DVError, match="do not exist"):
        weights.load_clip_encoder("cpu", tmp_path / "nowhere")
    with pytest.raises(DVError, match="no CLIP weights"):
        weights.load_clip_encoder("cpu", tmp_path)
    with pytest.raises(DVError, match="not a transformers model folder"):
        weights.load_dino_encoder("cpu", tmp_path)


def test_offline_without_clip_or_dino_names_both_in_one_line() -> None:
    """`dv eval` makes every metric it needs, then prepares each: the first failure names
    every missing model with its command, not only its own."""
    metrics = [ClipT("cpu"), DinoI("cpu"), TemporalConsistency("cpu")]
    with pytest.raises(MissingWeightsError) as caught:
        for metric in metrics:
            metric.prepare()
    message = str(caught.value)
    assert "\n" not in message
    assert "CLIP ViT-B/32 and DINO ViT-S/16 weights" in message
    assert f"`{weights.CLIP_FETCH_COMMAND} && {weights.DINO_FETCH_COMMAND}`" in message
    assert weights.CLIP_PATH_ENV in message and weights.DINO_PATH_ENV in message


def test_only_the_missing_weights_of_the_metrics_made_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip_only = TemporalConsistency("cpu")
    with pytest.raises(MissingWeightsError) as caught:
        clip_only.prepare()
    assert "DINO" not in str(caught.value)  # no DINO metric was asked for
    del clip_only
    # DINO given as a local copy: only CLIP is missing, even with a DINO metric made.
    tiny_dino_model().save_pretrained(tmp_path / "dino")
    monkeypatch.setenv(weights.DINO_PATH_ENV, str(tmp_path / "dino"))
    metrics = [DinoI("cpu"), ClipT("cpu")]
    metrics[0].prepare()
    with pytest.raises(MissingWeightsError) as caught:
        metrics[1].prepare()
    assert "DINO" not in str(caught.value) and weights.CLIP_FETCH_COMMAND in str(caught.value)
