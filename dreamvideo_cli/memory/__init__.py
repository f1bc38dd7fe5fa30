"""Measuring memory: a live-bytes tracker that runs one step for real or under
`FakeTensorMode` and reports the peak per device and category (`tracker`); models as fake
tensors without weights, and CUDA's autocast and kernel rules on the fake CPU tensors that
stand for a GPU (`fake`)."""

from dreamvideo_cli.memory.fake import CudaRules, checkpoint_contexts, gpu_autocast, materialize
from dreamvideo_cli.memory.tracker import (
    PLANNING_DEVICES,
    Category,
    DevicePeak,
    MemoryReport,
    MemoryTracker,
    Moment,
    track,
)

__all__ = [
    "PLANNING_DEVICES",
    "Category",
    "CudaRules",
    "DevicePeak",
    "MemoryReport",
    "MemoryTracker",
    "Moment",
    "checkpoint_contexts",
    "gpu_autocast",
    "materialize",
    "track",
]
