"""The backbone probe runs on any weights file and reports what it measured."""

from __future__ import annotations

import math
from pathlib import Path

from dv_toyworld import probe


def test_shape_words_reports_an_error_per_caption_and_noise_level(weights_file: Path) -> None:
    rows = probe.shape_words(str(weights_file))
    assert [row["t"] for row in rows] == list(probe.SHAPE_NOISE_STEPS)
    for row in rows:
        assert set(row) == {"t", "true", "wrong", "toy"}
        assert all(math.isfinite(row[k]) and row[k] >= 0 for k in ("true", "wrong", "toy"))
