"""The memory levers' options, shared by `dv subject learn`, `dv motion learn`, `dv compose` and
`dv plan` so that a plan's command line is the one a user runs, and `--fit`, which asks the
planner (imported when used: it loads torch) for the cheapest settings that fit."""

from __future__ import annotations

import os
import re

import typer

from dreamvideo_cli.cli._output import info
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.plan import Settings  # plain data: dreamvideo_cli.plan imports torch only when planning

# The help group of the memory options (dreamvideo_cli.cli._help).
MEMORY = "Device and memory"

FP8 = typer.Option(
    False,
    "--fp8",
    help="Store the frozen denoiser's linear weights as scaled fp8 (e4m3, a scale per output channel): "
    "about half the bf16 bytes, computed in bf16; a small measured error (docs/memory.md).",
    rich_help_panel=MEMORY,
)
BLOCKS_TO_SWAP = typer.Option(
    0,
    "--blocks-to-swap",
    min=0,
    metavar="N",
    help="Keep the frozen weights of the last N blocks in host memory and stream each in just before it "
    "runs: less GPU memory, same results, slower steps.",
    rich_help_panel=MEMORY,
)
FIT = typer.Option(
    None,
    "--fit",
    metavar="SIZE",
    help="Plan the run's memory first (as `dv plan` does) and apply the cheapest settings that fit this "
    "much GPU memory, e.g. 24GiB, or auto for this machine's GPU; says which in one line.",
    rich_help_panel=MEMORY,
)
OFFLOAD_ACTIVATIONS = typer.Option(
    False,
    "--offload-activations",
    help="Keep the activations saved for the backward pass in host memory: less GPU memory, same results.",
    rich_help_panel=MEMORY,
)


def fitted(
    stage: str,
    fit: str | None,
    resume: str | None,
    given: Settings,
    *,
    backbone: str,
    frames: int | None = None,
    batch_size: int | None = None,
    shard: bool = False,
) -> Settings:
    """`given`, or with `--fit`, the cheapest settings (at least those given) the planner says
    fit; the choice is said in one line on stderr."""
    if fit is None:
        return given
    if resume is not None:
        raise DVError(
            "--fit plans a new run, and a resumed run keeps the settings it was started with",
            "resume without --fit (add --blocks-to-swap or --offload-activations to change how it runs)",
        )
    chosen, line = fit_options(stage, fit, given, backbone=backbone, frames=frames, batch_size=batch_size, shard=shard)
    info(line)
    return chosen


_UNITS = {
    "": 2**30, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
    "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12,
}  # fmt: skip
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str, option: str = "--gpu-memory") -> int:
    """Bytes from "24GiB", "24G" (binary), "24GB" (decimal), "23000MiB" or "24" (GiB)."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise DVError(f"{option} {text!r} is not a size", f"write it like {option} 24GiB")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise DVError(f"{option} must be more than 0, got {text!r}", f"write it like {option} 24GiB")
    return size


def fit_options(
    stage: str,
    budget: str,
    given: Settings = Settings(),
    *,
    backbone: str,
    frames: int | None = None,
    batch_size: int | None = None,
    shard: bool = False,
) -> tuple[Settings, str]:
    """`--fit BUDGET` on `dv subject learn`, `dv motion learn` and `dv compose`: the cheapest
    settings that fit BUDGET ("24GiB", or "auto" for this machine's GPU), at least those given,
    and one line saying which; a DVError when nothing fits. Every process of a launched run
    plans the same (the plan is deterministic), for the processes the launcher started."""
    from dreamvideo_cli.plan import PlanRequest, fit

    size = detected_gpu_memory() if budget == "auto" else parse_size(budget, "--fit")
    if size is None:
        raise DVError("--fit auto needs a CUDA GPU to read its memory", "give the card's memory, e.g. --fit 24GiB")
    request = PlanRequest(
        stage, backbone, frames=frames, batch_size=batch_size, shard=shard,  # type: ignore[arg-type]
        processes=int(os.environ.get("WORLD_SIZE", "1")),
        settings=given,
    )  # fmt: skip
    found = fit(request, size)
    if found.settings is None:
        raise DVError(
            f"nothing fits {size / 2**30:.1f} GiB: {found.reason}", f"see dv plan {stage} --backbone {backbone}"
        )
    plan = found.plan
    line = (
        f"--fit {size / 2**30:.1f} GiB: {found.settings.describe(request.stage)} "
        f"(planned {plan.gpu_peak / 2**30:.1f} GiB on the GPU, {plan.host_peak / 2**30:.1f} GiB of host memory)"
    )
    return found.settings, line


def detected_gpu_memory() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(0).total_memory)
