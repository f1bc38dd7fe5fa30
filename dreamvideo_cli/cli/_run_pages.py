"""Keeping a learning run's page (`index.html` in its folder) current while it learns, so a
user can keep it open in a browser: written when the run starts, at most every few seconds as
losses are logged, and once more when it ends, stops or fails."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from dreamvideo_cli.events import Event, EventHandler, RunStarted, StepDone

REWRITE_SECONDS = 5.0  # the page refreshes itself; rewriting it more often than this buys nothing


class RunPages:
    """An EventHandler that forwards every event and keeps the run's page current."""

    def __init__(self, forward: EventHandler) -> None:
        self.forward = forward
        self.folder: Path | None = None
        self.written = 0.0

    def __call__(self, event: Event) -> None:
        self.forward(event)
        if isinstance(event, RunStarted):
            self.folder = Path(event.folder)
            self.write(running=True)
        elif isinstance(event, StepDone) and event.loss is not None and self._due():
            self.write(running=True)

    def _due(self) -> bool:
        return time.monotonic() - self.written > REWRITE_SECONDS

    def write(self, *, running: bool = False, stored: Sequence[str] = ()) -> None:
        if self.folder is None or not self.folder.is_dir():  # the run never started (its folder is gone)
            return
        from dreamvideo_cli.pages.run_page import write_run_page

        write_run_page(self.folder, running=running, stored=stored)
        self.written = time.monotonic()
