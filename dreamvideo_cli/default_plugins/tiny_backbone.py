from typing import Any

from dreamvideo_cli.hookspecs import hookimpl
from dreamvideo_cli.testing import TinyBackbone  # torch-free until it is built or loaded


@hookimpl
def register_backbones(register: Any) -> None:
    register(TinyBackbone)
