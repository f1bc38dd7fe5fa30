"""What the engine reports while it works. The engine never prints: it emits these,
and whoever called it (the CLI, a notebook, a test) decides how to show them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StageStarted:
    stage: str  # "embedding", "identity", "motion", "sampling", "decoding", ...
    total_steps: int
    description: str = ""
    unit: str = "step"  # what total_steps counts ("cell", "video", "chunk"); "" for a one-off


@dataclass(frozen=True)
class StepDone:
    stage: str
    step: int  # 1-based, so step == total_steps on the last one
    total_steps: int
    loss: float | None = None
    lr: float | None = None


@dataclass(frozen=True)
class CheckpointSaved:
    stage: str
    step: int
    path: str


@dataclass(frozen=True)
class StageFinished:
    stage: str


@dataclass(frozen=True)
class Note:
    message: str
    level: Literal["info", "warning"] = "info"


@dataclass(frozen=True)
class RunStarted:
    """A learning run has its folder (a new one, or the resumed one)."""

    run_id: str
    folder: str


Event = StageStarted | StepDone | CheckpointSaved | StageFinished | Note | RunStarted
EventHandler = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The default handler: drop everything."""


class EventLog:
    """A handler that keeps every event, for tests and for callers that render later."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]
