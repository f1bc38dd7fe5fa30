"""The appearance encoder: OpenCLIP ViT-H-14's image tower, as the DreamVideo authors use it.

The loading code is shared with the other backbone plugins and lives in the core module
`dreamvideo_cli.appearance`; this module re-exports what dv_modelscope uses.
"""

from __future__ import annotations

from dreamvideo_cli.appearance import (
    OpenCLIPImageEncoder,
    load_open_clip_encoder,
    load_transformers_encoder,
    random_open_clip_encoder,
)

__all__ = ["OpenCLIPImageEncoder", "load_open_clip_encoder", "load_transformers_encoder", "random_open_clip_encoder"]
