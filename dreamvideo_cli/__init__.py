"""dv: customized video generation (DreamVideo).

The public API, stated here once (docs/plugins.md says the same, and a test holds the
first-party plugins to it):

- the names in `__all__` below, imported from this package;
- the contract modules (`CONTRACT_MODULES`), which a plugin may also import directly:
  `backbone`, `objectives`, `codecs`, `text`, `metrics`, `samplers`, `events`, `errors`
  and `hookspecs`;
- the modules `__all__` names, each used as a namespace with its own public names:
  `media` (photos, clips, videos), `hub` (weights in the Hugging Face cache),
  `appearance` (appearance encoders) and `testing` (test doubles for plugin tests).

Every other module (`learn`, `composition`, `sampling`, `runtime`, `adapters`, `families`,
`plugins`, `cli`, ...) is private, whatever its name, and may change without notice: what a
plugin needs from them is re-exported here.

    from dreamvideo_cli import Backbone, Components, hookimpl   # a backbone plugin
    from dreamvideo_cli import Metric, EvalSample               # a metric plugin
    from dreamvideo_cli import Sampler                          # a sampler plugin

Names whose module imports torch (or rich) load on first use, so `import dreamvideo_cli`
(and `dv --help`) stays light.
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
    Expert,
    Fingerprint,
    SamplingDefaults,
    VideoFormat,
)
from dreamvideo_cli.errors import DVError, Interrupted, MissingWeightsError
from dreamvideo_cli.events import (
    CheckpointSaved,
    Event,
    EventHandler,
    Note,
    RunStarted,
    StageFinished,
    StageStarted,
    StepDone,
    ignore_events,
)
from dreamvideo_cli.hookspecs import hookimpl
from dreamvideo_cli.metrics import EvalSample, Metric
from dreamvideo_cli.objectives import DDPMObjective, FlowMatchObjective, NoiseSchedule, Objective
from dreamvideo_cli.samplers import Sampler

__version__ = "0.1.0"

# The contract modules (see the docstring); what a plugin may import besides this package
# and the modules named in `__all__`.
CONTRACT_MODULES = (
    "backbone",
    "objectives",
    "codecs",
    "text",
    "metrics",
    "samplers",
    "events",
    "errors",
    "hookspecs",
)

# name -> the module it lives in; imported on first access (these modules import torch or rich).
_LAZY: dict[str, str] = {
    "LatentCodec": "dreamvideo_cli.codecs",
    "FrameVAECodec": "dreamvideo_cli.codecs",
    "TextEncoding": "dreamvideo_cli.text",
    "CLIPTextEncoding": "dreamvideo_cli.text",
    "T5TextEncoding": "dreamvideo_cli.text",
    "Tokens": "dreamvideo_cli.text",
    "UNET3D": "dreamvideo_cli.families.unet3d",
    "AdapterSet": "dreamvideo_cli.adapters",
    "tokenize": "dreamvideo_cli.runtime",
    "encode_text": "dreamvideo_cli.runtime",
    "quiet_libraries": "dreamvideo_cli.runtime",
    "learn_subject": "dreamvideo_cli.learn",
    "learn_motion": "dreamvideo_cli.learn",
    "SubjectConfig": "dreamvideo_cli.learn",
    "MotionConfig": "dreamvideo_cli.learn",
    "sample_video": "dreamvideo_cli.sampling",
    "VideoRequest": "dreamvideo_cli.sampling",
    "compose": "dreamvideo_cli.composition",
    "ComposeConfig": "dreamvideo_cli.composition",
    "ComposeResult": "dreamvideo_cli.composition",
    "get_backbone": "dreamvideo_cli.plugins",
    "get_metric": "dreamvideo_cli.plugins",
    "get_sampler": "dreamvideo_cli.plugins",
    "registered": "dreamvideo_cli.plugins",
    # A plugin's own commands (the `register_commands` hook) talk like `dv`: data on stdout,
    # engine events rendered as progress on stderr.
    "ProgressRenderer": "dreamvideo_cli.cli.render",
    "print_json": "dreamvideo_cli.cli.render",
    "stdout": "dreamvideo_cli.cli.render",
}
# Public modules, used as namespaces (`from dreamvideo_cli import media`).
_MODULES = frozenset({"appearance", "hub", "media", "testing"})

__all__ = [
    "UNET3D",
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
    "Expert",
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
    "ProgressRenderer",
    "RunStarted",
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
    "VideoRequest",
    "__version__",
    "appearance",
    "compose",
    "encode_text",
    "get_backbone",
    "get_metric",
    "get_sampler",
    "hookimpl",
    "hub",
    "ignore_events",
    "learn_motion",
    "learn_subject",
    "media",
    "print_json",
    "quiet_libraries",
    "registered",
    "sample_video",
    "stdout",
    "testing",
    "tokenize",
]

if TYPE_CHECKING:
    from dreamvideo_cli import appearance, hub, media, testing
    from dreamvideo_cli.adapters import AdapterSet
    from dreamvideo_cli.cli.render import ProgressRenderer, print_json, stdout
    from dreamvideo_cli.codecs import FrameVAECodec, LatentCodec
    from dreamvideo_cli.composition import ComposeConfig, ComposeResult, compose
    from dreamvideo_cli.families.unet3d import UNET3D
    from dreamvideo_cli.learn import MotionConfig, SubjectConfig, learn_motion, learn_subject
    from dreamvideo_cli.plugins import get_backbone, get_metric, get_sampler, registered
    from dreamvideo_cli.runtime import encode_text, quiet_libraries, tokenize
    from dreamvideo_cli.sampling import VideoRequest, sample_video
    from dreamvideo_cli.text import CLIPTextEncoding, T5TextEncoding, TextEncoding, Tokens


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value: Any = importlib.import_module(f"{__name__}.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'dreamvideo_cli' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value
