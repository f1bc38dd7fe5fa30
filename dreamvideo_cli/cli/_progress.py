"""Rendering engine events on stderr with rich: one progress bar per stage."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dreamvideo_cli.cli._output import err, info, warn
from dreamvideo_cli.events import (
    CheckpointSaved,
    Event,
    Note,
    StageFinished,
    StageStarted,
    StepDone,
)


class ProgressRenderer:
    """An EventHandler: bars when stderr is a terminal, plain lines otherwise, nothing
    but warnings when quiet (e.g. with --json)."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        console = console or err.get()
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not self.live,
        )
        self.tasks: dict[str, TaskID] = {}
        self.last_loss: dict[str, str] = {}

    def __enter__(self) -> ProgressRenderer:
        self.progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Note):
            if event.level == "warning":
                warn(event.message)
            elif not self.quiet:
                info(event.message)
        elif isinstance(event, StageStarted):
            if not self.quiet and not self.live:
                steps = "step" if event.total_steps == 1 else "steps"
                info(f"{event.stage}: {event.description} ({event.total_steps} {steps})")
            self.tasks[event.stage] = self.progress.add_task(
                event.description, total=event.total_steps, stage=event.stage, status="", rate=""
            )
        elif isinstance(event, StepDone):
            task = self.tasks.get(event.stage)
            if event.loss is not None:
                self.last_loss[event.stage] = f"loss {event.loss:.4f}"
                if not self.quiet and not self.live:
                    info(f"{event.stage} {event.step}/{event.total_steps} loss {event.loss:.4f}")
            if task is not None:
                speed = self.progress.tasks[task].speed
                self.progress.update(
                    task,
                    completed=event.step,
                    status=self.last_loss.get(event.stage, ""),
                    rate=f"{speed:.1f} it/s" if speed else "",
                )
        elif isinstance(event, CheckpointSaved):
            if not self.quiet and not self.live:
                info(f"{event.stage}: checkpoint at step {event.step}")
        elif isinstance(event, StageFinished):
            task = self.tasks.get(event.stage)
            if task is not None:
                self.progress.update(task, completed=self.progress.tasks[task].total)
        sys.stderr.flush()
