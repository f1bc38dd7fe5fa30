"""How the CLI talks: data on stdout, progress and messages on stderr.

rich is imported on first use, not at start-up, so `dv --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich Console made on first attribute access."""

    def __init__(self, stderr: bool, **options: Any) -> None:
        self._stderr = stderr
        self._options = options
        self._console: Console | None = None

    def get(self) -> Console:
        """The real Console (for rich APIs that need one, e.g. Progress)."""
        return self._get()

    def _get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, **self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


# Progress, warnings and errors go to stderr so stdout stays clean for data and --json.
err: Any = _LazyConsole(stderr=True, soft_wrap=True)
out: Any = _LazyConsole(stderr=False, soft_wrap=True)


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
