"""One convention each, on every command (issue 31, item 9):

- step counts and learning rates are named after the stage they count: `--embedding-steps`,
  `--adapter-steps`, `--sample-steps`; `--embedding-lr`, `--adapter-lr` (no bare `--steps`
  or `--lr`, which meant something else on each command);
- where a command writes is `-o/--output`, and its JSON says `output`;
- metric names are lowercase words joined by hyphens (`clip-t`, `toy-motion-fidelity`);
- sizes are WIDTHxHEIGHT; times in JSON are UTC with Z.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import typer.main

from dreamvideo_cli.cli import app, main


def _commands() -> Iterator[tuple[str, Any]]:
    from dreamvideo_cli.cli import _install_plugin_commands

    _install_plugin_commands()  # dv demo and friends come from plugins

    def walk(prefix: str, command: Any) -> Iterator[tuple[str, Any]]:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(f"{prefix} {name}", sub)
        else:
            yield prefix, command

    yield from walk("dv", typer.main.get_command(app))


def _options() -> Iterator[tuple[str, Any]]:
    for path, command in _commands():
        for parameter in command.params:
            if parameter.param_type_name == "option":
                yield path, parameter


def test_step_counts_and_learning_rates_name_their_stage() -> None:
    seen: set[str] = set()
    for path, option in _options():
        for flag in option.opts:
            if flag.endswith("-steps") or flag == "--steps":
                assert flag in ("--embedding-steps", "--adapter-steps", "--sample-steps"), (path, flag)
                seen.add(flag)
            if "lr" in flag.split("-"):
                assert flag in ("--embedding-lr", "--adapter-lr"), (path, flag)
                seen.add(flag)
    assert seen == {"--embedding-steps", "--adapter-steps", "--sample-steps", "--embedding-lr", "--adapter-lr"}


def test_where_a_command_writes_is_dash_o_output() -> None:
    writers = []
    for path, option in _options():
        if "-o" in option.opts or "--out" in option.opts or "--output" in option.opts:
            assert sorted(option.opts) == ["--output", "-o"], (path, option.opts)
            writers.append(path)
    assert {"dv compose", "dv demo", "dv eval grid", "dv gallery"} <= set(writers)


def test_a_grid_takes_its_subjects_and_motions_as_compose_does() -> None:
    """`dv eval grid dog,cat walk ...`: comma lists in the positions compose uses."""
    grid = dict(_commands())["dv eval grid"]
    arguments = [p.name for p in grid.params if p.param_type_name == "argument"]
    assert arguments == ["subjects", "motions"]
    assert not any("--subjects" in p.opts for p in grid.params if p.param_type_name == "option")


def test_metric_names_are_hyphenated_words() -> None:
    from dreamvideo_cli.evaluate import metric_classes

    classes, _ = metric_classes(None)
    names = list(classes)
    assert "toy-motion-fidelity" in names
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) for name in names), names


def test_backbones_give_width_and_height(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["wan"]["width"], rows["wan"]["height"]) == (832, 480)
    assert "resolution" not in rows["wan"]
    assert main(["backbones"]) == 0
    text = capsys.readouterr().out
    assert "width x height" in text and re.search(r"wan\s+832x480", text)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 7, 22, 4, 48, tzinfo=UTC),
        datetime(2026, 12, 7, 23, 4, 48, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_times_in_json_are_utc_with_z(moment: datetime) -> None:
    from dreamvideo_cli.cli._output import iso_utc

    assert iso_utc(moment) == "2026-12-07T22:04:48Z"


def test_dv_list_json_times_end_in_z(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dv_registry import Registry
    from tests.test_cli_registry import entry

    monkeypatch.setenv("DV_HOME", str(tmp_path / "home"))
    Registry().add_version("subject", "dog", entry(1, token="<sks>", init_word="dog"))
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert main(["show", "dog", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert listed and all(e["created"].endswith("Z") for e in listed)
    assert shown["created"].endswith("Z")


def test_messages_about_a_learning_setting_name_its_option() -> None:
    """`--resume` says which option to change by the run config's field: every field the
    learn commands set maps to an option they have (run configs keep their older keys)."""
    import dataclasses

    from dreamvideo_cli.learn import MotionConfig, SubjectConfig
    from dreamvideo_cli.run_layout import flag_of

    commands = dict(_commands())
    for path, config in (("dv subject learn", SubjectConfig), ("dv motion learn", MotionConfig)):
        flags = {flag for p in commands[path].params for flag in getattr(p, "opts", [])}
        names = {p.name for p in commands[path].params}
        for field in dataclasses.fields(config):
            if field.name in names:
                assert flag_of(field.name) in flags, (path, field.name)
    assert flag_of("steps") == "--adapter-steps" and flag_of("lr_embedding") == "--embedding-lr"
