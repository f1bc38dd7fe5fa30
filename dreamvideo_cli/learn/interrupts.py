"""Stopping a learning run cleanly: Ctrl-C and SIGTERM become a flag the step loop checks
between steps, so it saves its state and exits with a resumable error instead of dying
mid-write."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from dreamvideo_cli.errors import Interrupted
from dreamvideo_cli.learn.run_folder import Run


class StopRequested:
    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    @contextmanager
    def installed(self) -> Iterator[StopRequested]:
        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no signal handling, nothing to restore
            previous = {}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def interrupted(run: Run, stage: str, step: int) -> Interrupted:
    return Interrupted(
        f"stopped during {stage} at step {step}; state saved in run {run.id}",
        f"continue with --resume {run.id}",
    )
