"""Hook implementations: how dv finds this plugin's backbones.

The entry point `modelscope = "dv_modelscope.plugin"` (group "dreamvideo") in this package's
pyproject.toml points here. Registering passes classes only; no weights are touched and no
torch is imported until a backbone is built or loaded.
"""

from __future__ import annotations

from typing import Any

from dreamvideo_cli.hookspecs import hookimpl


@hookimpl
def register_backbones(register: Any) -> None:
    from dv_modelscope.backbones import ModelScopeBackbone, ZeroscopeBackbone

    register(ModelScopeBackbone)
    register(ZeroscopeBackbone)
