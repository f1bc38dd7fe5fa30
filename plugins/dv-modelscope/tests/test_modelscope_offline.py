"""Missing weights: one line naming what is missing and the command that fetches it; the
download path, with huggingface_hub replaced by fakes (no test reaches the network)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import FAKE_COMMIT, MODELSCOPE_ID, OPEN_CLIP_COMMIT, OPEN_CLIP_ID, put_in_cache
from dreamvideo_cli.cli import main
from dreamvideo_cli.errors import MissingWeightsError
from dv_modelscope import hub
from dv_modelscope.backbones import ModelScopeBackbone, ZeroscopeBackbone

MODELSCOPE_COMMAND = (
    "hf download ali-vilab/text-to-video-ms-1.7b --include 'model_index.json' --include 'scheduler/*' "
    "--include 'tokenizer/*' --include '*/config.json' --include 'unet/diffusion_pytorch_model.fp16.safetensors' "
    "--include 'vae/diffusion_pytorch_model.fp16.safetensors' --include 'text_encoder/model.fp16.safetensors'"
)
# Both checkpoint names the loader accepts: laion's repository certainly holds the pickle
# (open_clip_pytorch_model.bin), and a command cannot first look which one is there.
OPEN_CLIP_COMMAND = (
    "hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K --include 'open_clip_config.json' "
    "--include 'open_clip_model.safetensors' --include 'open_clip_pytorch_model.bin'"
)
# The old id of ModelScope's repository (the organisation was renamed; the files are the same).
OLD_MODELSCOPE_ID = "damo-vilab/text-to-video-ms-1.7b"


def test_offline_with_an_empty_cache(hf_cache: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        ModelScopeBackbone().load("cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "ModelScopeT2V weights (ali-vilab/text-to-video-ms-1.7b)" in message
    assert "ViT-H-14 appearance encoder (laion/CLIP-ViT-H-14-laion2B-s32B-b79K)" in message
    assert f"is not in the Hugging Face cache {hf_cache} and HF_HUB_OFFLINE is set" not in message
    assert f"are not in the Hugging Face cache {hf_cache} and HF_HUB_OFFLINE is set" in message
    assert f"`{MODELSCOPE_COMMAND} && {OPEN_CLIP_COMMAND}`" in message
    assert "--backbone-path" in message
    assert OLD_MODELSCOPE_ID not in message  # downloads go to the current id
    with pytest.raises(MissingWeightsError):  # no revision can be named, and load would fail
        ModelScopeBackbone().fingerprint()


def test_offline_names_only_what_is_missing(tiny_parts: tuple[Path, Path], hf_cache: Path) -> None:
    pipeline, open_clip_folder = tiny_parts
    snapshot = put_in_cache(hf_cache, MODELSCOPE_ID, FAKE_COMMIT, pipeline)
    (snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    with pytest.raises(MissingWeightsError) as info:
        ModelScopeBackbone().load("cpu")
    message = str(info.value)
    assert "(ali-vilab/text-to-video-ms-1.7b: no unet)" in message and OPEN_CLIP_ID in message
    put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, open_clip_folder)
    with pytest.raises(MissingWeightsError) as info:
        ModelScopeBackbone().load("cpu")
    assert OPEN_CLIP_ID not in str(info.value)


def test_the_open_clip_hint_fetches_what_the_loader_accepts() -> None:
    """Run the hint's --include patterns against the files laion's repository certainly holds
    (config and the pickle; whether it also has open_clip_model.safetensors is not assumed):
    they must select a checkpoint the loader takes, and nothing else it cannot use."""
    from fnmatch import fnmatch

    command = ModelScopeBackbone()._appearance_source().command()
    assert command == OPEN_CLIP_COMMAND
    for weights in hub.OPEN_CLIP_WEIGHTS:
        assert f"--include '{weights}'" in command
    patterns = hub.OpenCLIPLayout().expected_patterns()
    laion_files = {
        "open_clip_config.json",
        "open_clip_pytorch_model.bin",
        "pytorch_model.bin",
        "config.json",
        "README.md",
    }
    fetched = {f for f in laion_files if any(fnmatch(f, p) for p in patterns)}
    assert fetched == {"open_clip_config.json", "open_clip_pytorch_model.bin"}
    assert hub.OpenCLIPLayout().plan(fetched).missing == []
    safetensors_only = {"open_clip_config.json", "open_clip_model.safetensors"}
    assert {f for f in safetensors_only if any(fnmatch(f, p) for p in patterns)} == safetensors_only


def test_zeroscope_command_fetches_its_pickles() -> None:
    command = ZeroscopeBackbone()._pipeline_source().command()
    assert command.startswith("hf download cerspense/zeroscope_v2_576w ")
    assert "--include 'unet/diffusion_pytorch_model.bin'" in command
    assert "--include 'text_encoder/pytorch_model.bin'" in command


def test_learn_offline_is_one_line_and_writes_nothing(
    hf_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image
    from skimage import data

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "astronaut", "coffee"):
        Image.fromarray(getattr(data, name)()).save(photos / f"{name}.jpg")
    code = main(["subject", "learn", str(photos), "--name", "x", "--backbone", "modelscope", "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == MissingWeightsError.exit_code != 0
    assert "Traceback" not in err
    assert len(errors) == 1, err
    assert MODELSCOPE_ID in errors[0] and "hf download" in errors[0] and "HF_HUB_OFFLINE is set" in errors[0]
    home = tmp_path / "dv"
    assert not (home / "manifests").exists() and not (home / "blobs").exists()
    assert not any(hf_cache.iterdir())  # nothing was downloaded either


# --- the download path, with huggingface_hub faked ---------------------------------------------------


class FakeHub:
    """Stands in for the Hub: lists `files`, and 'downloads' by copying from `source`."""

    def __init__(self, source: Path, files: set[str], commit: str) -> None:
        self.source = source
        self.files = files
        self.commit = commit
        self.calls: list[dict[str, Any]] = []

    def list_repo_files(self, repo_id: str, revision: str | None = None) -> list[str]:
        return sorted(self.files)

    def snapshot_download(self, repo_id: str, **kwargs: Any) -> str:
        from fnmatch import fnmatch

        self.calls.append({"repo_id": repo_id, **kwargs})
        snapshot = Path(kwargs["cache_dir"]) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / self.commit
        for rel in self.files:
            if any(fnmatch(rel, p) for p in kwargs["allow_patterns"]) and (self.source / rel).is_file():
                (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(self.source / rel, snapshot / rel)
        (snapshot.parent.parent / "refs").mkdir(exist_ok=True)
        (snapshot.parent.parent / "refs" / "main").write_text(self.commit)
        return str(snapshot)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def install_fake(monkeypatch: pytest.MonkeyPatch, hubs: dict[str, FakeHub]) -> None:
    import huggingface_hub

    class Api:
        def list_repo_files(self, repo_id: str, revision: str | None = None) -> list[str]:
            return hubs[repo_id].list_repo_files(repo_id, revision)

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda repo_id, **kw: hubs[repo_id].snapshot_download(repo_id, **kw)
    )


def test_download_fetches_the_fp16_files_only(
    online: None, tiny_parts: tuple[Path, Path], hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, open_clip_folder = tiny_parts
    # The hub publishes full-precision and pickled copies too; we want none of them.
    files = hub.list_files(pipeline) | {"unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.safetensors"}
    hubs = {
        MODELSCOPE_ID: FakeHub(pipeline, files, FAKE_COMMIT),
        OPEN_CLIP_ID: FakeHub(
            open_clip_folder, hub.list_files(open_clip_folder) | {"open_clip_pytorch_model.bin"}, OPEN_CLIP_COMMIT
        ),
    }
    install_fake(monkeypatch, hubs)
    backbone = ModelScopeBackbone()
    assert backbone.fingerprint().revision == "main"  # online, nothing cached yet
    backbone.load("cpu")
    assert backbone.fingerprint().revision == FAKE_COMMIT
    patterns = hubs[MODELSCOPE_ID].calls[0]["allow_patterns"]
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in patterns
    assert "unet/diffusion_pytorch_model.safetensors" not in patterns
    assert "unet/diffusion_pytorch_model.bin" not in patterns
    assert hubs[OPEN_CLIP_ID].calls[0]["allow_patterns"] == ["open_clip_config.json", "open_clip_model.safetensors"]
    # A second load comes from the cache: no more calls to the Hub.
    ModelScopeBackbone().load("cpu")
    assert len(hubs[MODELSCOPE_ID].calls) == 1 and len(hubs[OPEN_CLIP_ID].calls) == 1


def pickled_open_clip(open_clip_folder: Path, folder: Path) -> Path:
    """The tiny OpenCLIP model as laion's older repositories hold it: config + .bin only."""
    import torch
    from safetensors.torch import load_file

    folder.mkdir(parents=True)
    shutil.copy(open_clip_folder / "open_clip_config.json", folder)
    state = load_file(str(open_clip_folder / "open_clip_model.safetensors"))
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    return folder


def test_an_open_clip_repository_with_only_the_pickle_is_downloaded_and_loaded(
    online: None, tiny_parts: tuple[Path, Path], hf_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, open_clip_folder = tiny_parts
    pickled = pickled_open_clip(open_clip_folder, tmp_path / "laion")
    hubs = {
        MODELSCOPE_ID: FakeHub(pipeline, hub.list_files(pipeline), FAKE_COMMIT),
        OPEN_CLIP_ID: FakeHub(
            pickled, hub.list_files(pickled) | {"pytorch_model.bin", "config.json"}, OPEN_CLIP_COMMIT
        ),
    }
    install_fake(monkeypatch, hubs)
    parts = ModelScopeBackbone().load("cpu")
    assert hubs[OPEN_CLIP_ID].calls[0]["allow_patterns"] == ["open_clip_config.json", "open_clip_pytorch_model.bin"]
    assert parts.appearance_encoder is not None


def test_weights_cached_under_the_old_id_are_not_downloaded_again(
    online: None, tiny_parts: tuple[Path, Path], hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online, a complete copy under the old id is used as it is: the Hub is not asked."""
    pipeline, open_clip_folder = tiny_parts
    put_in_cache(hf_cache, OLD_MODELSCOPE_ID, FAKE_COMMIT, pipeline)
    put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, open_clip_folder)
    install_fake(monkeypatch, {})  # any call to the Hub would be a KeyError
    backbone = ModelScopeBackbone()
    backbone.load("cpu")
    assert (backbone.fingerprint().model_id, backbone.fingerprint().revision) == (OLD_MODELSCOPE_ID, FAKE_COMMIT)
    assert not hub.repo_folder(MODELSCOPE_ID).exists()


def test_an_incomplete_copy_under_the_old_id_is_completed_under_the_current_one(
    online: None, tiny_parts: tuple[Path, Path], hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, open_clip_folder = tiny_parts
    old = put_in_cache(hf_cache, OLD_MODELSCOPE_ID, "1" * 40, pipeline)
    shutil.rmtree(old / "unet")
    put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, open_clip_folder)
    hubs = {MODELSCOPE_ID: FakeHub(pipeline, hub.list_files(pipeline), FAKE_COMMIT)}  # no entry for the old id
    install_fake(monkeypatch, hubs)
    backbone = ModelScopeBackbone()
    assert backbone.fingerprint().model_id == OLD_MODELSCOPE_ID  # all there is, before loading
    backbone.load("cpu")
    assert [call["repo_id"] for call in hubs[MODELSCOPE_ID].calls] == [MODELSCOPE_ID]
    assert (backbone.fingerprint().model_id, backbone.fingerprint().revision) == (MODELSCOPE_ID, FAKE_COMMIT)
    assert ModelScopeBackbone().fingerprint() == backbone.fingerprint()  # the complete copy wins


def test_connection_errors_become_missing_weights(
    online: None, hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    class Unreachable:
        def list_repo_files(self, repo_id: str, revision: str | None = None) -> list[str]:
            raise ConnectionError("Failed to resolve 'huggingface.co'\n(name resolution)")

    monkeypatch.setattr(huggingface_hub, "HfApi", Unreachable)
    with pytest.raises(MissingWeightsError) as info:
        ModelScopeBackbone().load("cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "could not download ModelScopeT2V weights" in message and "ConnectionError" in message
    assert MODELSCOPE_COMMAND in message


def test_a_repo_without_the_needed_files_is_named(
    online: None, tiny_parts: tuple[Path, Path], hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, open_clip_folder = tiny_parts
    files = {f for f in hub.list_files(pipeline) if not f.startswith("text_encoder/")}
    install_fake(monkeypatch, {MODELSCOPE_ID: FakeHub(pipeline, files, FAKE_COMMIT)})
    put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, open_clip_folder)
    with pytest.raises(MissingWeightsError, match="on the Hugging Face Hub has no text_encoder"):
        ModelScopeBackbone().load("cpu")


def test_weights_format_preference() -> None:
    files = {
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
    }
    assert hub.find_weights(files, "unet", "diffusers", hub.FP16_SAFETENSORS) == hub.FP16_SAFETENSORS
    assert hub.find_weights(files, "unet", "diffusers", hub.PICKLE) == hub.PICKLE
    assert (
        hub.find_weights({"unet/diffusion_pytorch_model.bin"}, "unet", "diffusers", hub.FP16_SAFETENSORS) == hub.PICKLE
    )
    sharded = {"text_encoder/model.safetensors.index.json", "text_encoder/model-00001-of-00002.safetensors"}
    assert hub.find_weights(sharded, "text_encoder", "transformers", hub.FP16_SAFETENSORS) == hub.SAFETENSORS
    assert hub.find_weights(set(), "vae", "diffusers", hub.FP16_SAFETENSORS) is None


def test_sharded_variant_indexes_are_found() -> None:
    """diffusers and transformers save a sharded fp16 checkpoint as `<name>.fp16-0000k-of-0000n.<ext>`
    with the index `<name>.<ext>.index.fp16.json` (checked against the installed libraries in
    test_modelscope_loading.py::test_a_sharded_fp16_local_folder_loads)."""
    vae = {
        "vae/diffusion_pytorch_model.safetensors.index.fp16.json",
        "vae/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
    }
    assert hub.find_weights(vae, "vae", "diffusers", hub.FP16_SAFETENSORS) == hub.FP16_SAFETENSORS
    assert hub.find_weights(vae, "vae", "diffusers", hub.PICKLE) == hub.FP16_SAFETENSORS
    text = {"text_encoder/model.safetensors.index.fp16.json", "text_encoder/model.fp16-00001-of-00002.safetensors"}
    assert hub.find_weights(text, "text_encoder", "transformers", hub.SAFETENSORS) == hub.FP16_SAFETENSORS
    pickles = {"unet/diffusion_pytorch_model.bin.index.fp16.json"}
    assert hub.find_weights(pickles, "unet", "diffusers", hub.FP16_SAFETENSORS) == hub.FP16_PICKLE
    assert hub.FP16_SAFETENSORS.patterns("text_encoder", "transformers") == [
        "text_encoder/model.fp16.safetensors",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/model.fp16-*-of-*.safetensors",
    ]
    assert hub.SAFETENSORS.patterns("unet", "diffusers") == [
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model-*-of-*.safetensors",
    ]
    assert hub.PICKLE.index_filename("transformers") == "pytorch_model.bin.index.json"
    assert hub.FP16_PICKLE.index_filename("transformers") == "pytorch_model.bin.index.fp16.json"


def test_the_cache_is_searched_under_the_current_id_first(tiny_parts: tuple[Path, Path], hf_cache: Path) -> None:
    pipeline, _ = tiny_parts
    source = ModelScopeBackbone()._pipeline_source()
    assert source.repo_id == MODELSCOPE_ID and source.aliases == (OLD_MODELSCOPE_ID,)
    assert source.cached() is None
    old = put_in_cache(hf_cache, OLD_MODELSCOPE_ID, "1" * 40, pipeline)
    assert source.cached() == (OLD_MODELSCOPE_ID, old)
    current = put_in_cache(hf_cache, MODELSCOPE_ID, FAKE_COMMIT, pipeline)
    assert source.cached() == (MODELSCOPE_ID, current)
    assert ModelScopeBackbone().fingerprint().model_id == MODELSCOPE_ID
    (current / "vae" / "diffusion_pytorch_model.safetensors").unlink()  # incomplete: the old copy is whole
    assert source.cached() == (OLD_MODELSCOPE_ID, old)
    shutil.rmtree(old / "text_encoder")  # neither is whole: the current one is named
    assert source.cached() == (MODELSCOPE_ID, current)
    assert ZeroscopeBackbone()._pipeline_source().aliases == ()


def test_a_local_folder_without_image_encoder_needs_the_cached_one(
    local_folder: Path, tiny_parts: tuple[Path, Path], hf_cache: Path
) -> None:
    shutil.rmtree(local_folder / "image_encoder")
    with pytest.raises(MissingWeightsError) as info:
        ModelScopeBackbone(path=str(local_folder)).load("cpu")
    message = str(info.value)
    assert OPEN_CLIP_COMMAND in message and MODELSCOPE_ID not in message
    assert (
        f"or put an OpenCLIP checkpoint (open_clip_config.json and weights) in {local_folder / 'image_encoder'}"
        in message
    )
    put_in_cache(hf_cache, OPEN_CLIP_ID, OPEN_CLIP_COMMIT, tiny_parts[1])
    assert ModelScopeBackbone(path=str(local_folder)).load("cpu").appearance_encoder is not None
