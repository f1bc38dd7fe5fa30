"""Rendering engine events on stderr with rich: one progress bar per stage."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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

# Off a terminal (a pipe, a log file), a stage's progress is a line at least this often.
PIPED_EVERY_S = 10.0


@dataclass
class _Pace:
    """When a stage started and at which step, to give its rate and what is left."""

    started: float
    first_step: int | None = None
    printed: float = 0.0


def _clock_time(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}" + ("" if number == 1 else "s")


class ProgressRenderer:
    """An EventHandler: bars when stderr is a terminal, plain lines otherwise (each with its
    rate and time left, at least every PIPED_EVERY_S seconds), nothing but warnings when
    quiet (the processes other than the first of a launched group). --json changes stdout
    only: progress goes on."""

    def __init__(
        self,
        quiet: bool = False,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = PIPED_EVERY_S,
    ) -> None:
        console = console or err.get()
        self.quiet = quiet
        self.clock = clock
        self.every = every
        self.paces: dict[str, _Pace] = {}
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
            self.paces[event.stage] = _Pace(self.clock())
            if not self.quiet and not self.live:
                info(
                    f"{event.stage}: {event.description}"
                    + (f" ({_count(event.total_steps, event.unit)})" if event.unit else "")
                )
            self.tasks[event.stage] = self.progress.add_task(
                event.description, total=event.total_steps, stage=event.stage, status="", rate=""
            )
        elif isinstance(event, StepDone):
            task = self.tasks.get(event.stage)
            if event.loss is not None:
                self.last_loss[event.stage] = f"loss {event.loss:.4f}"
            if not self.quiet and not self.live:
                self._step_line(event)
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

    def _step_line(self, event: StepDone) -> None:
        """Off a terminal: a line for a step with a loss, the last step, and at least every
        `every` seconds, each with the rate and the time left."""
        now = self.clock()
        pace = self.paces.setdefault(event.stage, _Pace(now))
        if pace.first_step is None:
            pace.first_step = event.step - 1  # a resumed stage starts past 0
        due = event.loss is not None or event.step >= event.total_steps or now - pace.printed >= self.every
        if not due:
            return
        pace.printed = now
        line = f"{event.stage} {event.step}/{event.total_steps}"
        if event.loss is not None:
            line += f" loss {event.loss:.4f}"
        done, elapsed = event.step - pace.first_step, now - pace.started
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            line += f", {rate:.2f} it/s" if rate >= 1 else f", {1 / rate:.2f} s/it"
            line += f", {_clock_time(elapsed)} elapsed"
            if event.step < event.total_steps:
                line += f", eta {_clock_time((event.total_steps - event.step) / rate)}"
        info(line)
