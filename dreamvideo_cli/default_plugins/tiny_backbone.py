from typing import Any

from dreamvideo_cli.hookspecs import hookimpl


@hookimpl
def register_backbones(register: Any) -> None:
    from dreamvideo_cli.testing import TinyBackbone

    register(TinyBackbone)
