"""Loading the metric encoders: from the Hugging Face Hub cache, a local copy, or not at all.

The weights are the authors' models, as published on the Hub:

- CLIP ViT-B/32 with OpenAI's weights, as open_clip 3.x fetches them for
  `pretrained="openai"`: `timm/vit_base_patch32_clip_224.openai`, file
  `open_clip_model.safetensors`. OpenAI trained it with QuickGELU; open_clip's built-in
  `ViT-B-32` config uses plain GELU and only warns about the mismatch, so we build it with
  `force_quick_gelu=True`, the network the authors' `clip.load("ViT-B/32")` ran.
- DINO ViT-S/16: `facebook/dino-vits16` (transformers `ViTModel`, CLS token). Its hub config
  sets `layer_norm_eps` 1e-12 (transformers' ViT default); DINO's own `vit_small` (the
  `vision_transformer.py` the authors' metric script imports) builds every LayerNorm with
  eps 1e-6, so we build it with 1e-6 (`DINO_LAYER_NORM_EPS`), wherever the weights come from.

`DV_METRICS_CLIP_PATH` / `DV_METRICS_DINO_PATH` point at a local copy instead (a folder
from `hf download ... --local-dir`, an open_clip folder with `open_clip_config.json`, a
single CLIP weights file, or a transformers folder for DINO). Offline (HF_HUB_OFFLINE=1)
and not cached is one `MissingWeightsError` line naming the command that fetches them; when
the metrics being prepared need both models and both are missing, that one line names both
(`MetricWeightsMissing.also`).

Each encoder loads once per process and device; every metric instance shares it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamvideo_cli.errors import DVError, MissingWeightsError
from dv_metrics.encoders import DINOEncoder, OpenCLIPEncoder

CLIP_REPO = "timm/vit_base_patch32_clip_224.openai"
CLIP_FILE = "open_clip_model.safetensors"
CLIP_ARCH = "ViT-B-32"
DINO_REPO = "facebook/dino-vits16"
DINO_FILES = ("config.json", "pytorch_model.bin")
# DINO's vision_transformer.py: `norm_layer=partial(nn.LayerNorm, eps=1e-6)` for every ViT.
DINO_LAYER_NORM_EPS = 1e-6
CLIP_PATH_ENV = "DV_METRICS_CLIP_PATH"
DINO_PATH_ENV = "DV_METRICS_DINO_PATH"

CLIP_FETCH_COMMAND = f"hf download {CLIP_REPO} {CLIP_FILE}"
DINO_FETCH_COMMAND = f"hf download {DINO_REPO} {' '.join(DINO_FILES)}"

_shared: dict[tuple[str, str, str], Any] = {}
_shared_lock = threading.Lock()


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, not only when the hub library was imported."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "on", "yes", "true"):
            return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


_NOT_CACHED = "not cached"


@dataclass(frozen=True)
class MetricWeights:
    """The weights one family of metrics needs: what they are, how to fetch them, and where
    a local copy may be named instead."""

    what: str  # e.g. "CLIP ViT-B/32"
    repo: str
    # Files the cache must hold; each entry lists the names any one of which will do.
    files: tuple[tuple[str, ...], ...]
    command: str
    env: str

    def available(self) -> bool:
        """A local copy is named, or the cache holds every file (checked without the network)."""
        if os.environ.get(self.env):
            return True
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        return all(
            any(isinstance(try_to_load_from_cache(self.repo, name), str) for name in names) for names in self.files
        )


CLIP_WEIGHTS = MetricWeights("CLIP ViT-B/32", CLIP_REPO, ((CLIP_FILE,),), CLIP_FETCH_COMMAND, CLIP_PATH_ENV)
# transformers takes model.safetensors when a repository has it, else the pickle.
DINO_WEIGHTS = MetricWeights(
    "DINO ViT-S/16",
    DINO_REPO,
    (("config.json",), ("model.safetensors", "pytorch_model.bin")),
    DINO_FETCH_COMMAND,
    DINO_PATH_ENV,
)


class MetricWeightsMissing(MissingWeightsError):
    """Weights the metrics need are neither here nor downloadable now: one line naming every
    missing model and the command that fetches each."""

    def __init__(self, missing: list[MetricWeights], reason: str) -> None:
        self.missing = missing
        self.reason = reason
        first, rest = missing[0], missing[1:]
        if reason == _NOT_CACHED:
            what = " and ".join(w.what for w in missing)
            message = f"the {what} weights for the metrics are not in the Hugging Face cache and HF_HUB_OFFLINE is set"
        else:
            message = f"the {first.what} weights for the metrics are not on this machine and could not be downloaded: {reason}"
            if rest:
                others = " and ".join(w.what for w in rest)
                message += f"; the {others} weights are not in the Hugging Face cache either"
        commands = " && ".join(w.command for w in missing)
        envs = " and ".join(w.env for w in missing)
        copies = "a local copy" if len(missing) == 1 else "local copies"
        super().__init__(message, f"fetch them with `{commands}`, or set {envs} to {copies}")

    def also(self, others: Iterable[MetricWeights]) -> MetricWeightsMissing:
        """This error, naming too those of `others` that are missing as well."""
        extra = [w for w in dict.fromkeys(others) if w not in self.missing and not w.available()]
        return MetricWeightsMissing([*self.missing, *extra], self.reason) if extra else self


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _hub_file(weights: MetricWeights, filename: str) -> Path:
    """One of `weights`' files from the Hub cache; downloaded only when the Hub is not marked offline."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(weights.repo, filename, local_files_only=True))
    except Exception:  # any failure of a cache-only lookup just means "not cached"
        pass
    if hub_offline():
        raise MetricWeightsMissing([weights], _NOT_CACHED)
    try:
        return Path(hf_hub_download(weights.repo, filename))
    except Exception as exc:
        raise MetricWeightsMissing([weights], _short(exc)) from None


def _quiet_transformers() -> None:
    # transformers reports unused pooler weights and the like, meant for its developers.
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()


def load_clip_encoder(device: str = "cpu", source: str | os.PathLike[str] | None = None) -> OpenCLIPEncoder:
    """CLIP ViT-B/32 (OpenAI) from the Hub cache, or the open_clip model at `source`."""
    import warnings

    with warnings.catch_warnings():
        # open_clip warns about a QuickGELU mismatch we resolve by forcing QuickGELU.
        warnings.simplefilter("ignore", UserWarning)
        if source is None:
            weights = _hub_file(CLIP_WEIGHTS, CLIP_FILE)
            model, tokenizer = _open_clip_from_file(weights)
        else:
            path = Path(source).expanduser()
            if path.is_dir() and (path / "open_clip_config.json").is_file():
                model, tokenizer = _open_clip_from_folder(path)
            elif path.is_dir():
                model, tokenizer = _open_clip_from_file(_weights_in(path, CLIP_PATH_ENV))
            elif path.is_file():
                model, tokenizer = _open_clip_from_file(path)
            else:
                raise DVError(f"CLIP weights {path} do not exist", f"check {CLIP_PATH_ENV} or unset it")
    return OpenCLIPEncoder(model, tokenizer, device=device)


def _weights_in(folder: Path, env: str) -> Path:
    for name in (CLIP_FILE, "open_clip_pytorch_model.bin", "model.safetensors"):
        if (folder / name).is_file():
            return folder / name
    raise DVError(
        f"no CLIP weights in {folder} (looked for {CLIP_FILE})",
        f"fetch them with `{CLIP_FETCH_COMMAND} --local-dir {folder}` or fix {env}",
    )


def _open_clip_from_file(weights: Path) -> tuple[Any, Any]:
    import open_clip

    try:
        model = open_clip.create_model(CLIP_ARCH, pretrained=str(weights), force_quick_gelu=True)
    except Exception as exc:
        raise DVError(
            f"cannot load CLIP weights {weights}: {_short(exc)}", "delete the file and fetch it again"
        ) from None
    return model, open_clip.get_tokenizer(CLIP_ARCH)


def _open_clip_from_folder(folder: Path) -> tuple[Any, Any]:
    import open_clip

    name = f"local-dir:{folder}"
    try:
        model = open_clip.create_model(name)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:
        raise DVError(f"cannot load the open_clip model in {folder}: {_short(exc)}", f"check {CLIP_PATH_ENV}") from None
    return model, tokenizer


def load_dino_encoder(device: str = "cpu", source: str | os.PathLike[str] | None = None) -> DINOEncoder:
    """DINO ViT-S/16 from the Hub cache, or the transformers ViT folder at `source`."""
    from transformers import ViTModel

    _quiet_transformers()
    if source is not None:
        path = Path(source).expanduser()
        if not (path / "config.json").is_file():
            raise DVError(
                f"{path} is not a transformers model folder (no config.json)", f"check {DINO_PATH_ENV} or unset it"
            )
        try:
            model = ViTModel.from_pretrained(path, add_pooling_layer=False, layer_norm_eps=DINO_LAYER_NORM_EPS)
        except Exception as exc:
            raise DVError(f"cannot load the DINO model in {path}: {_short(exc)}", f"check {DINO_PATH_ENV}") from None
        return DINOEncoder(model, device=device)
    try:
        model = ViTModel.from_pretrained(
            DINO_REPO, add_pooling_layer=False, layer_norm_eps=DINO_LAYER_NORM_EPS, local_files_only=True
        )
    except OSError:
        if hub_offline():
            raise MetricWeightsMissing([DINO_WEIGHTS], _NOT_CACHED) from None
        try:
            model = ViTModel.from_pretrained(DINO_REPO, add_pooling_layer=False, layer_norm_eps=DINO_LAYER_NORM_EPS)
        except OSError as exc:
            raise MetricWeightsMissing([DINO_WEIGHTS], _short(exc)) from None
    return DINOEncoder(model, device=device)


def _shared_encoder(kind: str, device: str, env: str, load: Any) -> Any:
    source = os.environ.get(env) or None
    key = (kind, device, source or "")
    with _shared_lock:
        if key not in _shared:
            _shared[key] = load(device, source)
        return _shared[key]


def shared_clip_encoder(device: str) -> OpenCLIPEncoder:
    """The process's CLIP encoder on `device`, loaded on first use."""
    encoder: OpenCLIPEncoder = _shared_encoder("clip", device, CLIP_PATH_ENV, load_clip_encoder)
    return encoder


def shared_dino_encoder(device: str) -> DINOEncoder:
    """The process's DINO encoder on `device`, loaded on first use."""
    encoder: DINOEncoder = _shared_encoder("dino", device, DINO_PATH_ENV, load_dino_encoder)
    return encoder


__all__ = [
    "CLIP_FETCH_COMMAND",
    "CLIP_PATH_ENV",
    "CLIP_REPO",
    "CLIP_WEIGHTS",
    "DINO_FETCH_COMMAND",
    "DINO_LAYER_NORM_EPS",
    "DINO_PATH_ENV",
    "DINO_REPO",
    "DINO_WEIGHTS",
    "MetricWeights",
    "MetricWeightsMissing",
    "hub_offline",
    "load_clip_encoder",
    "load_dino_encoder",
    "shared_clip_encoder",
    "shared_dino_encoder",
]
