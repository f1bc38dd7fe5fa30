"""The metric contract: a score for one generated video."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np


@dataclass
class EvalSample:
    """One video to score and what it should match."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    prompt: str | None = None  # with placeholder tokens already replaced by init words
    reference_images: list[np.ndarray] = field(default_factory=list)  # uint8 [H, W, 3] each
    extras: dict[str, Any] = field(default_factory=dict)  # metadata a metric may use


class Metric(ABC):
    """A named score. Heavy weights load lazily on first `score`, on `device`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()  # subset of {"prompt", "reference_images", "motion"}
    higher_is_better: ClassVar[bool] = True

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def prepare(self) -> None:  # noqa: B027 - optional hook, a no-op unless overridden
        """Load weights now (before any video is scored), so a missing download fails early."""

    @abstractmethod
    def score(self, sample: EvalSample) -> float:
        """The metric's value for one video."""
