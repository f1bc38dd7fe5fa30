from typing import Any

from dreamvideo_cli.hookspecs import hookimpl
from dreamvideo_cli.samplers import DDIM, DPM_SOLVER, EULER, UNIPC


@hookimpl
def register_samplers(register: Any) -> None:
    register(DDIM)
    register(DPM_SOLVER)
    register(UNIPC)
    register(EULER)
