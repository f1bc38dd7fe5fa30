"""How the CLI talks: data on stdout, progress and messages on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Progress, warnings and errors go to stderr so stdout stays clean for data and --json.
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", markup=True, highlight=False)


def info(message: str) -> None:
    err.print(message, markup=False, highlight=False)


def error_line(message: str) -> None:
    # markup=False: user-supplied names and paths may contain [brackets].
    err.print("error: " + message, style="bold red", markup=False, highlight=False)
