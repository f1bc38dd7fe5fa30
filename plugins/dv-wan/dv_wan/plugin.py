"""Hook implementations: how dv finds this plugin's backbones.

The entry point `wan = "dv_wan.plugin"` (group "dreamvideo") in this package's pyproject.toml
points here. Registering passes classes only; nothing heavy is imported.
"""

from __future__ import annotations

from typing import Any

from dreamvideo_cli.hookspecs import hookimpl


@hookimpl
def register_backbones(register: Any) -> None:
    from dv_wan.backbones import (
        TinyWan22A14BBackbone,
        TinyWan22Backbone,
        TinyWanBackbone,
        Wan14BBackbone,
        Wan22A14BBackbone,
        Wan22TI2V5BBackbone,
        WanBackbone,
    )

    register(WanBackbone)
    register(Wan14BBackbone)
    register(Wan22TI2V5BBackbone)
    register(Wan22A14BBackbone)
    register(TinyWanBackbone)
    register(TinyWan22Backbone)
    register(TinyWan22A14BBackbone)
