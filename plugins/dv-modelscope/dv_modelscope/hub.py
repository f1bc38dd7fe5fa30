"""Where ModelScopeT2V's and Zeroscope's weights come from.

The rules (cache first, download only when online, every failure one MissingWeightsError with
the `hf download` command) and the OpenCLIP repository layout live in the core module
`dreamvideo_cli.hub`, shared with the other backbone plugins. This module re-exports them and
adds what is ModelScope's own: its pipeline's sub-folders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dreamvideo_cli.hub import (
    FP16_PICKLE,
    FP16_SAFETENSORS,
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHTS,
    PICKLE,
    SAFETENSORS,
    HubSource,
    Layout,
    Library,
    OpenCLIPLayout,
    Plan,
    WeightsFormat,
    find_weights,
    folder_digest,
    formats_in_order,
    has_tokenizer,
    hub_cache,
    list_files,
    missing_weights_error,
    offline,
    repo_folder,
    resolve,
    snapshot_identity,
)
from dreamvideo_cli.hub import PipelineLayout as _PipelineLayout

__all__ = [
    "FP16_PICKLE",
    "FP16_SAFETENSORS",
    "OPEN_CLIP_CONFIG",
    "OPEN_CLIP_WEIGHTS",
    "PICKLE",
    "PIPELINE_MODELS",
    "SAFETENSORS",
    "HubSource",
    "Layout",
    "OpenCLIPLayout",
    "PipelineLayout",
    "Plan",
    "WeightsFormat",
    "find_weights",
    "folder_digest",
    "formats_in_order",
    "has_tokenizer",
    "hub_cache",
    "list_files",
    "missing_weights_error",
    "offline",
    "repo_folder",
    "resolve",
    "snapshot_identity",
]

# A TextToVideoSDPipeline's models and the library that saved each.
PIPELINE_MODELS: dict[str, Library] = {
    "unet": "diffusers",
    "vae": "diffusers",
    "text_encoder": "transformers",
}


@dataclass(frozen=True)
class PipelineLayout(_PipelineLayout):
    """A diffusers TextToVideoSDPipeline folder: unet/, vae/, text_encoder/, tokenizer/."""

    models: Mapping[str, Library] = field(default_factory=lambda: dict(PIPELINE_MODELS))
