"""`dv gallery [-o DIR] [--open]`: a static page of the registry (see dreamvideo_cli.pages.gallery)."""

from __future__ import annotations

from pathlib import Path

import typer

from dreamvideo_cli.cli._help import GroupedCommand
from dreamvideo_cli.cli._output import out


def install(app: typer.Typer) -> None:
    app.command("gallery", cls=GroupedCommand, rich_help_panel="Registry")(gallery)


def gallery(
    output: Path = typer.Option(Path("dv-gallery"), "-o", "--output", help="Folder of the page (index.html)."),
    open_page: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
) -> None:
    """Write a page of every subject and motion in the registry, with photos and commands."""
    # Imported here for start-up time: dv_registry loads pydantic (`dv --help` must stay quick).
    from dreamvideo_cli.pages.gallery import write_gallery
    from dv_registry import Registry

    path = write_gallery(Registry(), output)
    out.print(f"wrote {path}")
    if open_page:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
