"""Refusing, before anything loads, a run longer than the device's memory can hold; and
warning, before a GPU run loads, when its weights will not fit the host's memory.

A request for more frames than a backbone makes by default (`--frames 100000`) would grow
the denoiser's attention with the square of its frames until the system kills the process,
with no word. Such a request is planned first (`plan_stage`, fake tensors): up to 3x the
default length as asked; beyond, the peak is the quadratic in frames through the plans at
1x, 2x and 3x (planning time itself grows with frames: the VAE encodes and decodes in
chunks). It is refused in one line when the peak is more than the GPU (on a CPU, this
machine) has.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dreamvideo_cli.backbone import Backbone
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.plan.model import PlanRequest, Settings, StageName
from dreamvideo_cli.plan.planner import _frozen_bytes, plan_stage

__all__ = ["check_device_memory", "host_memory_warning", "loaded_bytes", "memory_needed"]


def memory_needed(
    stage: StageName,
    backbone: Backbone,
    frames: int,
    settings: Settings,
    on_gpu: bool,
    batch_size: int | None = None,
) -> float:
    """The planned peak bytes of `stage` at `frames` on one device: the GPU's, or on a CPU
    the GPU stand-in's and the host's together (both are this machine's)."""
    default = backbone.motion_frames if stage == "motion" else backbone.video_format.frames

    def peak(n: int) -> int:
        request = PlanRequest(
            stage, backbone.name, frames=n, batch_size=batch_size, settings=settings, device="cuda" if on_gpu else "cpu"
        )
        plan = plan_stage(request, backbone=type(backbone)(random_weights=True))
        return plan.gpu_peak if on_gpu else plan.gpu_peak + plan.host_peak

    step = default - 1 if backbone.temporal_compression > 1 else default  # k * factor + 1 frames stay valid
    points = [default + i * step for i in range(3)]
    if frames <= points[-1]:
        return float(peak(frames))
    (f0, f1, f2), (p0, p1, p2) = points, [peak(f) for f in points]
    # Newton's form of the quadratic through the three plans, at the asked length.
    d1, d2 = (p1 - p0) / (f1 - f0), ((p2 - p1) / (f2 - f1) - (p1 - p0) / (f1 - f0)) / (f2 - f0)
    return p0 + d1 * (frames - f0) + d2 * (frames - f0) * (frames - f1)


def check_device_memory(
    stage: StageName,
    backbone: Backbone,
    frames: int,
    settings: Settings,
    device: torch.device,
    batch_size: int | None = None,
) -> None:
    """Refuse `stage` at `frames` when it needs more memory than `device` has; a length up to
    the backbone's default is not checked (it is what the backbone is made for)."""
    default = backbone.motion_frames if stage == "motion" else backbone.video_format.frames
    if frames <= default:
        return
    on_gpu = device.type == "cuda"
    need = memory_needed(stage, backbone, frames, settings, on_gpu, batch_size)
    have = torch.cuda.get_device_properties(device).total_memory if on_gpu else _physical_memory()
    if have and need > have:
        where = "the GPU" if on_gpu else "this machine"
        raise DVError(
            f"--frames {frames} would need about {need / 2**30:.1f} GiB, more than {where} has ({have / 2**30:.1f} GiB)",
            f"use fewer frames ({backbone.name} {'learns' if stage == 'motion' else 'makes'} {default}); "
            f"`dv plan {stage} --backbone {backbone.name} --frames N` says what N needs",
        )


def loaded_bytes(backbone: Backbone, dtype: torch.dtype) -> int:
    """The bytes of every frozen part of `backbone` as a run loads them in `dtype` (the VAE
    and what a backbone keeps in float32 stay so): built on the meta device, no weights read."""
    from dreamvideo_cli.plan.world import _meta_parts, frozen_modules

    parts = _meta_parts(type(backbone)(random_weights=True), dtype)
    return sum(_frozen_bytes(m) for m in frozen_modules(parts))


def host_memory_warning(backbone: Backbone, device: torch.device, processes: int = 1) -> str | None:
    """On a GPU every frozen part is loaded to host memory first (`memory.placement`); when
    they need more than this machine has available (`processes` runs loading at once on it),
    the system would stop the run while it loads, without a word. A line saying so, or None."""
    if device.type != "cuda":
        return None
    available = available_memory()
    if not available:
        return None
    try:
        need = loaded_bytes(backbone, torch.bfloat16) * processes
    except Exception:  # a plugin's backbone that cannot be built on the meta device: no advice
        return None
    if need <= available:
        return None
    each = f" ({processes} processes)" if processes > 1 else ""
    return (
        f"{backbone.name}'s weights take about {need / 2**30:.1f} GiB of host memory while loading{each}, "
        f"and this machine has {available / 2**30:.1f} GiB available: the system may stop the run while it loads "
        "(close other programs, add swap, or use a machine with more memory; docs/memory.md)"
    )


def available_memory() -> int:
    """The memory this machine can give a new program now, in bytes: Linux's MemAvailable,
    else its physical memory (0 where the system says neither)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _physical_memory()


def _physical_memory() -> int:
    """This machine's memory in bytes (0 where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0
