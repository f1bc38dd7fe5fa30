"""How the CLI talks: data on stdout, progress and messages on stderr.

rich is imported on first use, not at start-up, so `dv --help` stays fast.

When stdout is not a terminal (a pipe, a file, a test's capture) it is data for grep, cut
and friends: tables are never cut to a terminal's width (`toy_subjec...`) and lines carry
no trailing padding, so `dv list | cat` prints every name whole and `dv show | cat` no
200-column rows of spaces.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# Wide enough that no table is ever narrowed to fit; rich sizes a table to its content.
PIPED_WIDTH = 100_000
# Spaces (and tabs) before the end of a line, ignoring the colour codes that may follow
# them when FORCE_COLOR asks for colour in a pipe.
_TRAILING = re.compile(r"[ \t]+((?:\x1b\[[0-9;]*m)*)$")


def _stdout_is_terminal() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False


def strip_trailing_spaces(line: str) -> str:
    """`line` without the padding rich adds to a table's last column."""
    return _TRAILING.sub(r"\1", line)


class _TrimmedStdout:
    """The current sys.stdout, minus trailing spaces at the end of each line. Text after the
    last newline is written at once, less any spaces it ends in: those are held back until
    something other than a newline follows them."""

    def __init__(self) -> None:
        self._held = ""

    def write(self, text: str) -> int:
        written = len(text)
        text, self._held = self._held + text, ""
        *lines, tail = text.split("\n")
        trimmed = "".join(strip_trailing_spaces(line) + "\n" for line in lines)
        kept = tail.rstrip(" \t")
        self._held = tail[len(kept) :]
        sys.stdout.write(trimmed + kept)
        return written

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return str(getattr(sys.stdout, "encoding", None) or "utf-8")


class _LazyConsole:
    """A rich Console made on first attribute access.

    The stdout console is chosen at each use: rich's own on a terminal, a wide one that
    writes through `_TrimmedStdout` otherwise (tests and CliRunner swap sys.stdout)."""

    def __init__(self, stderr: bool, **options: Any) -> None:
        self._stderr = stderr
        self._options = options
        self._console: Console | None = None
        self._piped: Console | None = None

    def get(self) -> Console:
        """The real Console (for rich APIs that need one, e.g. Progress)."""
        return self._get()

    def _get(self) -> Console:
        from rich.console import Console

        if not self._stderr and not _stdout_is_terminal():
            if self._piped is None:
                self._piped = Console(
                    file=_TrimmedStdout(),  # type: ignore[arg-type]  # a TextIO in all rich uses
                    width=PIPED_WIDTH,
                    highlight=False,
                    **self._options,
                )
            return self._piped
        if self._console is None:
            self._console = Console(stderr=self._stderr, highlight=False, **self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


# Progress, warnings and errors go to stderr so stdout stays clean for data and --json.
err: Any = _LazyConsole(stderr=True, soft_wrap=True)
out: Any = _LazyConsole(stderr=False, soft_wrap=True)


def iso_utc(moment: datetime) -> str:
    """A time as JSON gives it everywhere in dv: ISO 8601 in UTC, with Z
    (2026-12-07T22:04:48Z), as the registry's manifests store it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    err.print("[yellow]warning:[/yellow] ", end="", markup=True)
    err.print(message, markup=False)


def info(message: str) -> None:
    err.print(message, markup=False)


def error_line(message: str) -> None:
    # markup=False: user-supplied names and paths may contain [brackets].
    err.print("error: " + message, style="bold red", markup=False)
