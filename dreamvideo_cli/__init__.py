"""dv: customized video generation (DreamVideo).

This module is the plugin author's whole API: everything in `__all__` is stable, and a
plugin needs nothing else (first-party plugins are held to that by a test). Names that
need torch load on first use, so `import dreamvideo_cli` (and `dv --help`) stays light.

    from dreamvideo_cli import Backbone, Components, hookimpl   # a backbone plugin
    from dreamvideo_cli import Metric, EvalSample               # a metric plugin
    from dreamvideo_cli import Sampler                          # a sampler plugin

Composing is `dreamvideo_cli.compose.compose(...)` (the module's name would shadow a
function of the same name here). Public modules besides this one: `runtime` (devices,
dtypes, text, appearance), `hub` (weights in the Hugging Face cache), `appearance`,
`testing` (tiny backbones for plugin tests) and `cli.render` (progress for plugin commands).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dreamvideo_cli.backbone import (
    AdapterDesign,
    AdapterKind,
    AdapterSite,
    AdapterSlot,
    Backbone,
    Components,
    DenoiserFamily,
    Fingerprint,
    NoiseSchedule,
    SamplingDefaults,
    VideoFormat,
)
from dreamvideo_cli.errors import DVError, Interrupted, MissingWeightsError
from dreamvideo_cli.events import (
    CheckpointSaved,
    Event,
    EventHandler,
    Note,
    StageFinished,
    StageStarted,
    StepDone,
    ignore_events,
)
from dreamvideo_cli.hookspecs import hookimpl
from dreamvideo_cli.metrics import EvalSample, Metric
from dreamvideo_cli.samplers import Sampler

__version__ = "0.1.0"

# name -> the module it lives in; imported on first access (these modules import torch).
_LAZY: dict[str, str] = {
    "Objective": "dreamvideo_cli.objectives",
    "DDPMObjective": "dreamvideo_cli.objectives",
    "FlowMatchObjective": "dreamvideo_cli.objectives",
    "LatentCodec": "dreamvideo_cli.codecs",
    "FrameVAECodec": "dreamvideo_cli.codecs",
    "TextEncoding": "dreamvideo_cli.text",
    "CLIPTextEncoding": "dreamvideo_cli.text",
    "T5TextEncoding": "dreamvideo_cli.text",
    "Tokens": "dreamvideo_cli.text",
    "AdapterSet": "dreamvideo_cli.adapters",
    "learn_subject": "dreamvideo_cli.learn",
    "learn_motion": "dreamvideo_cli.learn",
    "SubjectConfig": "dreamvideo_cli.learn",
    "MotionConfig": "dreamvideo_cli.learn",
    "ComposeConfig": "dreamvideo_cli.compose",
    "ComposeResult": "dreamvideo_cli.compose",
    "sample_video": "dreamvideo_cli.compose",
}

__all__ = [
    "AdapterDesign",
    "AdapterKind",
    "AdapterSet",
    "AdapterSite",
    "AdapterSlot",
    "Backbone",
    "CLIPTextEncoding",
    "CheckpointSaved",
    "Components",
    "ComposeConfig",
    "ComposeResult",
    "DDPMObjective",
    "DVError",
    "DenoiserFamily",
    "EvalSample",
    "Event",
    "EventHandler",
    "Fingerprint",
    "FlowMatchObjective",
    "FrameVAECodec",
    "Interrupted",
    "LatentCodec",
    "Metric",
    "MissingWeightsError",
    "MotionConfig",
    "NoiseSchedule",
    "Note",
    "Objective",
    "Sampler",
    "SamplingDefaults",
    "StageFinished",
    "StageStarted",
    "StepDone",
    "SubjectConfig",
    "T5TextEncoding",
    "TextEncoding",
    "Tokens",
    "VideoFormat",
    "__version__",
    "hookimpl",
    "ignore_events",
    "learn_motion",
    "learn_subject",
    "sample_video",
]

if TYPE_CHECKING:
    from dreamvideo_cli.adapters import AdapterSet
    from dreamvideo_cli.codecs import FrameVAECodec, LatentCodec
    from dreamvideo_cli.compose import ComposeConfig, ComposeResult, sample_video
    from dreamvideo_cli.learn import MotionConfig, SubjectConfig, learn_motion, learn_subject
    from dreamvideo_cli.objectives import DDPMObjective, FlowMatchObjective, Objective
    from dreamvideo_cli.text import CLIPTextEncoding, T5TextEncoding, TextEncoding, Tokens


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dreamvideo_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
