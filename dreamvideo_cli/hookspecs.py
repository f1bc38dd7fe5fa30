"""The hooks a dv plugin can implement. Each receives a callback to register with."""

from typing import Any

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("dreamvideo")
hookimpl = HookimplMarker("dreamvideo")


@hookspec
def register_backbones(register: Any) -> None:
    """Register backbones: call register(BackboneClass) for each `Backbone` subclass."""


@hookspec
def register_samplers(register: Any) -> None:
    """Register samplers: call register(sampler) for each `Sampler` instance."""


@hookspec
def register_metrics(register: Any) -> None:
    """Register metrics: call register(MetricClass) for each `Metric` subclass."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands or command groups to the `dv` Typer app passed as `cli`."""
