"""One source of truth for defaults: every CLI option that sets a config field has the
config dataclass's default (or, for comma-list options, its text)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from dreamvideo_cli.cli import compose as compose_cli
from dreamvideo_cli.cli import learn as learn_cli
from dreamvideo_cli.composition import ComposeConfig
from dreamvideo_cli.learn import MotionConfig, SubjectConfig
from dreamvideo_cli.sweep import split_list


@pytest.mark.parametrize(
    ("command", "config"),
    [
        (learn_cli.subject_learn, SubjectConfig),
        (learn_cli.motion_learn, MotionConfig),
        (compose_cli.compose, ComposeConfig),
    ],
)
def test_cli_defaults_are_the_config_defaults(command: Callable[..., Any], config: type[Any]) -> None:
    fields = {f.name: f.default for f in dataclasses.fields(config)}
    shared = 0
    for name, parameter in inspect.signature(command).parameters.items():
        if name not in fields:
            continue
        shared += 1
        default = getattr(parameter.default, "default", parameter.default)
        if isinstance(default, str) and isinstance(fields[name], float):  # a comma list: "1" is [1.0]
            default = float(default)
        if isinstance(default, str) and isinstance(fields[name], tuple):  # a comma list of pairs: "" is ()
            default = tuple(split_list(default))
        assert default == fields[name], (
            f"{command.__name__} --{name.replace('_', '-')}: {default!r} vs {config.__name__} {fields[name]!r}"
        )
    assert shared >= 10
