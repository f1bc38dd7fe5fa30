"""Frame sampling (paper Sec. 3.3): `count` frames at a target fps from a random start, as
source-frame indices. Shared by motion learning and anything that reads training windows."""

from __future__ import annotations

import math

import numpy as np


def frame_stride(source_fps: float, target_fps: float) -> int:
    """Source frames to step per sampled frame: max(1, round(source_fps / target_fps))."""
    if target_fps <= 0:
        raise ValueError(f"target fps must be positive, got {target_fps}")
    if not math.isfinite(source_fps) or source_fps <= 0:
        return 1
    return max(1, round(source_fps / target_fps))


def sample_frame_indices(num_source_frames: int, count: int, stride: int, rng: np.random.Generator) -> list[int]:
    """`count` indices `stride` apart from a random start; a too-short clip is looped (wraps to its start)."""
    if num_source_frames <= 0:
        raise ValueError("a clip with no frames cannot be sampled")
    if count <= 0:
        return []
    stride = max(1, int(stride))
    span = (count - 1) * stride + 1
    if span <= num_source_frames:
        start = int(rng.integers(0, num_source_frames - span + 1))
        return [start + i * stride for i in range(count)]
    # Too short: take every stride-th frame from a random offset and play that loop
    # from a random phase, so the motion keeps its speed and the seam is a cut.
    offset = int(rng.integers(0, min(stride, num_source_frames)))
    cycle = list(range(offset, num_source_frames, stride))
    phase = int(rng.integers(0, len(cycle)))
    return [cycle[(phase + i) % len(cycle)] for i in range(count)]
