"""Hook implementations: the toy world's backbone, metrics and `dv demo`.

Registering imports neither torch nor numpy: `dv --help` stays instant."""

from typing import Any

from dreamvideo_cli.hookspecs import hookimpl


@hookimpl
def register_backbones(register: Any) -> None:
    from dv_toyworld.backbone import ToyWorldBackbone

    register(ToyWorldBackbone)


@hookimpl
def register_metrics(register: Any) -> None:
    from dv_toyworld.metrics import METRICS

    for metric in METRICS:
        register(metric)


@hookimpl
def register_commands(cli: Any) -> None:
    from dv_toyworld.cli import install

    install(cli)
