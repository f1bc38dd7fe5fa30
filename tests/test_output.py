"""What `dv` prints when stdout is not a terminal (a pipe, a file): whole and unpadded; tags in
natural order; short help that is a whole sentence."""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from dreamvideo_cli.cli import _install_plugin_commands, _output, app, main
from dv_registry import SAFETENSORS, NewEntry, NewFile, Registry

LONG_NAME = "toy_subject_with_a_rather_long_name"
LONG_DESCRIPTION = "a description long enough to be cut at eighty columns, and then some more words"


def safetensors_bytes(value: int) -> bytes:
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<I", value)


def entry(seed: int, **fields: Any) -> NewEntry:
    adapter = NewFile("adapter", "identity_adapter.safetensors", safetensors_bytes(seed), SAFETENSORS)
    return NewEntry([adapter], {"backbone": {"backbone": "tiny"}, "seed": seed, **fields})


@pytest.fixture
def narrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry with long names, and an environment that says the terminal is 40 columns
    wide (as rich hears it from COLUMNS, or from a terminal on stdin while stdout is piped)."""
    monkeypatch.setenv("DV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "40")
    # Consoles are made on first use; make them again under this environment.
    monkeypatch.setattr(_output.out, "_console", None)
    monkeypatch.setattr(_output.out, "_piped", None, raising=False)
    registry = Registry()
    checkpoints = {tag: entry(i) for i, tag in enumerate(["step1000", "step100", "step50", "v1-step100", "v1-step50"])}
    registry.add_version(
        "subject",
        LONG_NAME,
        entry(9, token="<sks>", init_word="toy", description=LONG_DESCRIPTION),
        checkpoints=checkpoints,
    )
    return registry


def dv(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def assert_unpadded(text: str) -> None:
    padded = [line for line in text.splitlines() if line != line.rstrip()]
    assert not padded, padded


def test_piped_tables_are_whole_and_unpadded(narrow: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    listing = dv(capsys, "list")
    assert f"{LONG_NAME}:latest" in listing and LONG_DESCRIPTION in listing and "..." not in listing
    assert_unpadded(listing)
    shown = dv(capsys, "show", LONG_NAME)
    assert LONG_DESCRIPTION in shown and "identity_adapter.safetensors" in shown
    assert_unpadded(shown)
    assert max(len(line) for line in shown.splitlines()) < 200  # no row padded to the widest field
    usage = dv(capsys, "du")
    assert LONG_NAME in usage
    assert_unpadded(usage)


def test_piped_tables_of_every_command_group_are_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tables printed by modules that only use `out` (discovery here) are whole too."""
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setattr(_output.out, "_console", None)
    monkeypatch.setattr(_output.out, "_piped", None, raising=False)
    listing = dv(capsys, "samplers")
    from dreamvideo_cli.plugins import get_samplers

    for name, registration in get_samplers().items():
        assert name in listing
        description = getattr(registration.item, "description", "")
        assert not description or description in listing
    assert_unpadded(listing)


def test_trimming_keeps_text_that_continues_on_the_same_line(capsys: pytest.CaptureFixture[str]) -> None:
    trimmed = _output._TrimmedStdout()
    trimmed.write("a  ")
    trimmed.write("b   \nc \x1b[1mbold   \x1b[0m\n")
    trimmed.write("tail   ")
    assert capsys.readouterr().out == "a  b\nc \x1b[1mbold\x1b[0m\ntail"


def test_tags_are_listed_in_natural_order(narrow: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    expected = ["latest", "v1", "step50", "step100", "step1000", "v1-step50", "v1-step100"]
    rows = json.loads(dv(capsys, "list", "--all", "--json"))
    assert [row["tag"] for row in rows] == expected
    lines = dv(capsys, "list", "--all").splitlines()[1:]
    assert [line.split()[0].split(":", 1)[1] for line in lines] == expected
    usage = json.loads(dv(capsys, "du", "--json"))
    assert usage["names"][0]["tags"] == expected


def _commands(group: Any, path: str) -> list[tuple[str, Any]]:
    found = []
    for name, command in getattr(group, "commands", {}).items():
        found.append((f"{path} {name}", command))
        found += _commands(command, f"{path} {name}")
    return found


def test_short_help_is_never_cut_inside_parentheses() -> None:
    """click takes a command's first sentence as its short help, and a period followed by a
    word that is not lowercase ends it: `(paper Sec. 3.2)` became `(paper Sec.`."""
    _install_plugin_commands()
    cut = []
    for path, command in _commands(typer.main.get_command(app), "dv"):
        text = command.get_short_help_str(limit=10_000)
        if text.count("(") != text.count(")"):
            cut.append(f"{path}: {text}")
    assert not cut, cut


def test_console_on_a_terminal_is_rich_s_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, tables fit the terminal as before; only piped output changes."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.setattr(_output.out, "_console", None)
    assert _output.out.is_terminal and _output.out.width != _output.PIPED_WIDTH
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not _output.out.is_terminal and _output.out.width == _output.PIPED_WIDTH
