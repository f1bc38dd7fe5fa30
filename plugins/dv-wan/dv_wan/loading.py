"""Wan's weights (Wan 2.1 T2V, Wan 2.2 TI2V-5B): where they are, what they are called, and how
they become frozen modules. Functions that name or default anything per model take its `size`
(`configs.WanSize`: "1.3B", "14B", "5B" or "A14B").

Where the weights come from, in order (the same rules as dv-modelscope):
- `random_weights`: the full-size architecture with seeded random weights, nothing read;
- `path=DIR`: a local diffusers WanPipeline folder (transformer/, vae/, text_encoder/,
  tokenizer/, optionally scheduler/), with the appearance encoder in DIR/image_encoder/ if it
  is there, else from the Hugging Face cache;
- otherwise the Hugging Face cache, downloading what is missing unless HF_HUB_OFFLINE is set.

This module is imported by the backbone classes, which dv imports to register them, so it
imports nothing heavy at module level: torch, diffusers, transformers and open_clip are
imported inside the functions that build or load modules.

Precision. The transformer and the text encoder are loaded in the requested dtype the way
their libraries' `from_pretrained` does it: a few small modules stay in float32 (diffusers'
`_keep_in_fp32_modules` of WanTransformer3DModel: RoPE, the time embedder, the scale-shift
tables and the norms; transformers keeps UMT5's `wo` in float32 under float16 only), so the
parts equal what WanPipeline.from_pretrained(torch_dtype=dtype) would hold. Random weights are
cast by the same rule. The VAE is always float32, as diffusers advises for Wan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamvideo_cli.backbone import Fingerprint
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.hub import (
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHTS,
    SAFETENSORS,
    HubSource,
    Library,
    OpenCLIPLayout,
    PipelineLayout,
    find_weights,
    list_files,
    local_identity,
    missing_weights_error,
    offline,
    resolve,
)
from dv_wan import configs
from dv_wan.configs import WanSize

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch
    from torch import nn

__all__ = [
    "PIPELINE_LAYOUT",
    "PIPELINE_MODELS",
    "RANDOM_REVISION",
    "RANDOM_SEED",
    "REDUCED_TEXT_ENCODER_LAYERS",
    "WanParts",
    "build_random",
    "fingerprint",
    "join_experts",
    "load_folder",
    "locate",
    "pipeline_layout",
    "wan_sources",
]


@dataclass
class WanParts:
    """The frozen parts of a Wan text-to-video model, on one device."""

    transformer: Any  # diffusers WanTransformer3DModel
    vae: Any  # diffusers AutoencoderKLWan, always float32 (diffusers advises fp32 for it)
    text_encoder: Any  # transformers UMT5EncoderModel
    tokenizer: Any  # transformers T5-family tokenizer
    scheduler_config: dict[str, Any]  # the folder's scheduler/scheduler_config.json if present, else configs' default
    appearance: (
        Any  # nn.Module: images [B,3,H,W] in [0,1] -> [B, appearance_dim] (OpenCLIP ViT-H-14 as dv_modelscope does)
    )


# A WanPipeline's models and the library that saved each.
PIPELINE_MODELS: dict[str, Library] = {
    "transformer": "diffusers",
    "vae": "diffusers",
    "text_encoder": "transformers",
}
# The repositories publish full-precision safetensors, the transformer and the text encoder
# in shards (other formats in a local folder are accepted too).
PIPELINE_LAYOUT = PipelineLayout(SAFETENSORS, PIPELINE_MODELS, sharded=True)


def pipeline_layout(size: WanSize) -> PipelineLayout:
    """The pipeline folder of `size`: T2V-A14B's also has transformer_2/ (its low-noise expert)."""
    if configs.EXPERT_FOLDERS[size] == ("transformer",):
        return PIPELINE_LAYOUT
    models: dict[str, Library] = {**PIPELINE_MODELS, **dict.fromkeys(configs.EXPERT_FOLDERS[size], "diffusers")}
    return PipelineLayout(SAFETENSORS, models, sharded=True)


def join_experts(transformers: list[Any]) -> Any:
    """One transformer as it is; T2V-A14B's two (high-noise first, as the pipeline folder
    names them transformer/ and transformer_2/) as one `WanExperts` denoiser."""
    if len(transformers) == 1:
        return transformers[0]
    from dv_wan.family import WAN22_A14B_BOUNDARY, WanExperts

    high, low = transformers
    return WanExperts(high, low, WAN22_A14B_BOUNDARY)


RANDOM_REVISION = "random"
RANDOM_SEED = 0
# The reduced random text encoder of `build_random(..., text_encoder_full_size=False)`.
REDUCED_TEXT_ENCODER_LAYERS = 2
# Sub-folders of a local folder that make up its identity. The scheduler is left out: its
# config changes how one samples, not what an adapter was trained on.
_FINGERPRINTED_PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder")
# Which backbone a folder's VAE belongs to, named in the hint when a folder is of another Wan.
_BY_LATENT_CHANNELS = {
    16: "Wan 2.1 (--backbone wan or wan-14b) or Wan 2.2 T2V-A14B (--backbone wan2.2-a14b)",
    48: "Wan 2.2 TI2V-5B (--backbone wan2.2-5b)",
}
_FOLDER_HINT = (
    "it needs transformer/, vae/, text_encoder/ (config.json and weights each) and tokenizer/ (tokenizer.json)"
)


# --- where the weights are -----------------------------------------------------------------------


def wan_sources(hub_id: str, revision: str, size: WanSize = "1.3B") -> list[HubSource]:
    """The pipeline repository and the OpenCLIP appearance encoder's repository."""
    return [
        HubSource(hub_id, revision, pipeline_layout(size), f"{configs.VERSIONS[size]} weights"),
        HubSource(
            configs.OPEN_CLIP_HUB_ID, "main", OpenCLIPLayout(), f"the {configs.OPEN_CLIP_ARCH} appearance encoder"
        ),
    ]


def _local_root(path: str, size: WanSize) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DVError(
            f"--backbone-path {path} is not a folder",
            f"pass a diffusers {configs.VERSIONS[size]} folder: {_FOLDER_HINT}",
        )
    return root


def _check_latent_channels(root: Path, size: WanSize) -> None:
    """Refuse a folder of another Wan (Wan 2.1's VAE has 16 latent channels, Wan 2.2's 48)
    before anything loads: adapters learnt on it would be recorded under the wrong backbone."""
    config = root / "vae" / "config.json"
    expected = configs.VAE_CONFIGS[size]["z_dim"]
    found = json.loads(config.read_text()).get("z_dim", 16)  # AutoencoderKLWan's default
    if found != expected:
        wanted = f"{configs.VERSIONS[size]} {size}"
        other = _BY_LATENT_CHANNELS.get(found)
        raise DVError(
            f"--backbone-path {root} holds a model whose VAE has {found} latent channels; {wanted} has {expected}",
            f"it looks like {other}: use that backbone, or a {wanted} folder" if other else f"pass a {wanted} folder",
        )


def _image_encoder_missing(files: set[str]) -> list[str] | None:
    """What a local image_encoder/ lacks ([] when complete), or None when there is none."""
    inside = {f.removeprefix("image_encoder/") for f in files if f.startswith("image_encoder/")}
    if not inside:
        return None
    if OPEN_CLIP_CONFIG in inside:  # OpenCLIP's own layout
        return [f"image_encoder/{m}" for m in OpenCLIPLayout().plan(inside).missing]
    if "config.json" not in inside:
        return [f"image_encoder/{OPEN_CLIP_CONFIG} or image_encoder/config.json"]
    if find_weights(files, "image_encoder", "transformers", SAFETENSORS) is None:  # a transformers CLIP tower
        return ["image_encoder/ weights"]
    return []


def locate(hub_id: str, revision: str, path: str | None, size: WanSize = "1.3B") -> tuple[Path, Path]:
    """(pipeline folder, appearance encoder folder) on this machine.

    With `path`, the local folder is checked first (one DVError naming everything it lacks);
    its image_encoder/ is used if it has one, else the OpenCLIP repository from the cache.
    Without, both repositories come from the cache, downloaded only when not offline; offline
    and absent is one MissingWeightsError whose hint is the `hf download` command(s). A local
    folder of another Wan (by its VAE's latent channels) is refused."""
    sources = wan_sources(hub_id, revision, size)
    if path is None:
        pipeline, appearance = resolve(sources)
        return pipeline, appearance
    root = _local_root(path, size)
    files = list_files(root)
    missing = pipeline_layout(size).plan(files).missing
    encoder_missing = _image_encoder_missing(files)
    missing += encoder_missing or []
    if missing:
        raise DVError(
            f"--backbone-path {root} is not a complete {configs.VERSIONS[size]} diffusers folder: no {', '.join(missing)}",
            _FOLDER_HINT,
        )
    _check_latent_channels(root, size)
    if encoder_missing is not None:
        return root, root / "image_encoder"
    alternative = (
        f"put an OpenCLIP checkpoint ({OPEN_CLIP_CONFIG} and {OPEN_CLIP_WEIGHTS[0]}) in {root / 'image_encoder'}"
    )
    (appearance,) = resolve([sources[1]], alternative)
    return root, appearance


def fingerprint(
    name: str, hub_id: str, revision: str, path: str | None, random_weights: bool, size: WanSize = "1.3B"
) -> Fingerprint:
    """What `load` would return, named without any download: the hub id and the commit of the
    cached snapshot; for a local folder its hub identity when it is a cache snapshot, else a
    digest of its content (never its place); "random" for random weights.

    Offline with nothing cached it raises MissingWeightsError, since no revision can be named
    and loading would fail anyway; online, the requested revision stands in until the download
    has put a snapshot in the cache."""
    if random_weights:
        return Fingerprint(name, hub_id, RANDOM_REVISION, random_weights=True)
    if path is not None:
        return Fingerprint(name, *local_identity(_local_root(path, size), _FINGERPRINTED_PARTS))
    sources = wan_sources(hub_id, revision, size)
    cached = sources[0].cached_revision()
    if cached is not None:
        return Fingerprint(name, hub_id, cached)
    if offline():  # name every repository that is missing, as `locate` would, in one line
        absent = [(s, s.missing_in(s.cached_folder())) for s in sources]
        raise missing_weights_error([(s, missing) for s, missing in absent if missing])
    return Fingerprint(name, hub_id, revision)


# --- loading and building ------------------------------------------------------------------------


def _cast(module: nn.Module, dtype: torch.dtype, keep_fp32: Iterable[str] = ()) -> None:
    """Cast floating parameters and buffers to `dtype`, except those inside a sub-module whose
    name is in `keep_fp32` (matched on dotted-name components, as diffusers does), which
    become float32."""
    import torch

    keep = set(keep_fp32)
    for name, tensor in chain(module.named_parameters(), module.named_buffers()):
        if tensor.is_floating_point():
            target = torch.float32 if keep.intersection(name.split(".")) else dtype
            if tensor.dtype != target:
                tensor.data = tensor.data.to(target)


def _cast_transformer(transformer: Any, dtype: torch.dtype) -> None:
    """As WanTransformer3DModel.from_pretrained(torch_dtype=dtype) leaves it."""
    _cast(transformer, dtype, getattr(transformer, "_keep_in_fp32_modules", None) or ())


def _cast_text_encoder(text_encoder: Any, dtype: torch.dtype) -> None:
    """As transformers' from_pretrained(dtype=dtype) leaves it: `_keep_in_fp32_modules` only
    under float16, `_keep_in_fp32_modules_strict` under float16 and bfloat16."""
    import torch

    keep: set[str] = set()
    if dtype == torch.float16:
        keep |= set(getattr(text_encoder, "_keep_in_fp32_modules", None) or ())
    if dtype in (torch.float16, torch.bfloat16):
        keep |= set(getattr(text_encoder, "_keep_in_fp32_modules_strict", None) or ())
    _cast(text_encoder, dtype, keep)


def _freeze(parts: WanParts, device: torch.device) -> WanParts:
    """Every module frozen, in eval mode, on `device`. Moved with nn.Module.to(device) alone,
    so no dtype changes (diffusers' own `to` would also warn about its fp32 modules)."""
    for module in (parts.transformer, parts.vae, parts.text_encoder, parts.appearance):
        module.requires_grad_(False).eval()
        _move_keeping_ties(module, device)
    return parts


def _move_keeping_ties(module: Any, device: torch.device) -> None:
    """nn.Module.to(device), with parameters shared between sub-modules (umT5's token
    embedding: `shared` and `encoder.embed_tokens`) still shared after: a move to the meta
    device (the planner's) makes a new parameter per holder, counting such a tensor twice."""
    import torch.nn as nn

    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for owner in module.modules():
        for name, param in owner.named_parameters(recurse=False):
            holders.setdefault(id(param), []).append((owner, name))
    nn.Module.to(module, device)
    for (first, first_name), *others in (h for h in holders.values() if len(h) > 1):
        for owner, name in others:
            setattr(owner, name, getattr(first, first_name))


def _limit_length(tokenizer: Any) -> Any:
    # umT5's saved tokenizer has no useful model_max_length (a huge sentinel); WanPipeline
    # pads prompts to 512, which is what the engine reads from model_max_length.
    if tokenizer.model_max_length > configs.TOKENIZER_MAX_LENGTH:
        tokenizer.model_max_length = configs.TOKENIZER_MAX_LENGTH
    return tokenizer


def load_folder(
    pipeline: Path, appearance: Path, device: str | torch.device, dtype: torch.dtype, size: WanSize = "1.3B"
) -> WanParts:
    """Load a WanPipeline folder and an appearance encoder folder (OpenCLIP's layout with
    open_clip_config.json, or a transformers CLIPVisionModelWithProjection with config.json):
    transformer, text encoder and appearance encoder in `dtype`, the VAE in float32, all frozen
    and on `device`. Without scheduler/ the scheduler config is `size`'s published one."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    from dreamvideo_cli.appearance import load_appearance_encoder

    device = torch.device(device)
    files = list_files(pipeline)

    def weights(folder: str) -> dict[str, Any]:
        fmt = find_weights(files, folder, pipeline_layout(size).models[folder], SAFETENSORS)
        if fmt is None or f"{folder}/config.json" not in files:
            raise DVError(
                f"{pipeline} is not a complete {configs.VERSIONS[size]} diffusers folder: no {folder}", _FOLDER_HINT
            )
        return {"variant": fmt.variant, "use_safetensors": fmt.safetensors}

    transformer = join_experts(
        [
            WanTransformer3DModel.from_pretrained(pipeline / folder, torch_dtype=dtype, **weights(folder))
            for folder in configs.EXPERT_FOLDERS[size]
        ]
    )
    vae = AutoencoderKLWan.from_pretrained(pipeline / "vae", torch_dtype=torch.float32, **weights("vae"))
    text_encoder = UMT5EncoderModel.from_pretrained(pipeline / "text_encoder", dtype=dtype, **weights("text_encoder"))
    tokenizer = _limit_length(AutoTokenizer.from_pretrained(pipeline / "tokenizer"))
    scheduler_file = pipeline / "scheduler" / "scheduler_config.json"
    scheduler_config = (
        json.loads(scheduler_file.read_text()) if scheduler_file.is_file() else dict(configs.SCHEDULER_CONFIGS[size])
    )
    encoder = load_appearance_encoder(appearance, device, dtype)
    return _freeze(WanParts(transformer, vae, text_encoder, tokenizer, scheduler_config, encoder), device)


def build_random(
    size: WanSize,
    device: str | torch.device,
    dtype: torch.dtype,
    *,
    text_encoder_full_size: bool = True,
) -> WanParts:
    """The full-size architecture of Wan `size` with seeded random weights (the same
    weights every run on the same kind of device), built directly on `device` ("meta" works).

    The umT5-XXL text encoder alone is 5.68B parameters (22.7 GB in float32, more than the
    1.3B transformer four times over). With `text_encoder_full_size=False` it is built with
    REDUCED_TEXT_ENCODER_LAYERS blocks instead of 24: the same width (4096, so the
    transformer's text projection fits), heads and 256,384-row embedding table (which is what
    textual inversion trains), 1.44B parameters. Its outputs are as meaningless as the full
    random encoder's; only memory and speed differ.

    The tokenizer is the on-the-fly word-piece T5 tokenizer of `dv_wan.tiny` padded to 512
    tokens: random weights need a T5-family tokenizer, not umT5's 256k-piece vocabulary."""
    import open_clip
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from dreamvideo_cli.appearance import random_open_clip_encoder
    from dv_wan.tiny import t5_word_tokenizer

    device = torch.device(device)
    text_config = dict(configs.TEXT_ENCODER_CONFIG)
    if not text_encoder_full_size:
        text_config["num_layers"] = REDUCED_TEXT_ENCODER_LAYERS
    tokenizer = t5_word_tokenizer(max_length=configs.TOKENIZER_MAX_LENGTH)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(RANDOM_SEED)
        # Each part is cast as soon as it is built, so the float32 copies never coexist.
        with torch.device(device):
            experts: list[Any] = []
            for _ in configs.EXPERT_FOLDERS[size]:
                experts.append(WanTransformer3DModel(**configs.TRANSFORMER_CONFIGS[size]))
                _cast_transformer(experts[-1], dtype)
            transformer = join_experts(experts)
            vae: Any = AutoencoderKLWan(**configs.VAE_CONFIGS[size])
            text_encoder: Any = UMT5EncoderModel(UMT5Config(**text_config))
            _cast_text_encoder(text_encoder, dtype)
        model_cfg = open_clip.get_model_config(configs.OPEN_CLIP_ARCH)
        appearance = random_open_clip_encoder(model_cfg, device, dtype)
    parts = WanParts(transformer, vae, text_encoder, tokenizer, dict(configs.SCHEDULER_CONFIGS[size]), appearance)
    return _freeze(parts, device)
