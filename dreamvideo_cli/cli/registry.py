"""Registry commands: list, show, rm, tag, export, import, verify, prune, du."""

from __future__ import annotations

import typer


def install(app: typer.Typer) -> None:
    """Placeholder until the registry commands land."""
