"""`dv plan subject|motion|compose`: the memory a run will take, per phase, on the GPU and the
host, planned without weights and without a GPU; with `--gpu-memory`, the cheapest settings
that fit and the command that runs with them. The planner (and torch) is imported inside the
commands, after the arguments are checked: `dv --help` stays instant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from dreamvideo_cli.cli._help import GroupedCommand
from dreamvideo_cli.cli._memory_options import BLOCKS_TO_SWAP, FP8, OFFLOAD_ACTIVATIONS, detected_gpu_memory, parse_size
from dreamvideo_cli.cli._output import info, out, print_json, warn
from dreamvideo_cli.cli.learn import BACKBONE, CHECKPOINTING, SHARD
from dreamvideo_cli.errors import DVError

if TYPE_CHECKING:
    from dreamvideo_cli.plan import Fit, StagePlan

plan_app = typer.Typer(
    help="Plan a run's GPU and host memory before it starts (no weights, no GPU), and the settings that fit a card.",
    no_args_is_help=True,
)


def install(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")


FRAMES = typer.Option(
    None, "--frames", help="Frames (default: the backbone's; ModelScope 32, Wan 33 to learn, 81 to compose)."
)
BATCH = typer.Option(None, "--batch-size", help="Per process, as on the learn commands (default: subject 4, motion 1).")
GPU_MEMORY = typer.Option(
    None,
    "--gpu-memory",
    help="The card's memory, e.g. 24GiB: find the cheapest settings that fit (default: this machine's GPU, if any).",
)
PROCESSES = typer.Option(1, "--processes", help="Processes the run is launched on (torchrun); figures are per process.")
JSON = typer.Option(False, "--json", help="Print the plan as JSON on stdout.")


@plan_app.command("subject", cls=GroupedCommand)
def plan_subject(
    backbone: str = BACKBONE,
    frames: int = FRAMES,
    batch_size: int = BATCH,
    gpu_memory: str = GPU_MEMORY,
    processes: int = PROCESSES,
    shard: bool = SHARD,
    gradient_checkpointing: bool = CHECKPOINTING,
    fp8: bool = FP8,
    blocks_to_swap: int = BLOCKS_TO_SWAP,
    offload_activations: bool = OFFLOAD_ACTIVATIONS,
    json: bool = JSON,
) -> None:
    """Textual inversion, then the identity adapter (with encoding the photos)."""
    _plan("subject", **locals())


@plan_app.command("motion", cls=GroupedCommand)
def plan_motion(
    backbone: str = BACKBONE,
    frames: int = FRAMES,
    batch_size: int = BATCH,
    gpu_memory: str = GPU_MEMORY,
    processes: int = PROCESSES,
    shard: bool = SHARD,
    gradient_checkpointing: bool = CHECKPOINTING,
    fp8: bool = FP8,
    blocks_to_swap: int = BLOCKS_TO_SWAP,
    offload_activations: bool = OFFLOAD_ACTIVATIONS,
    json: bool = JSON,
) -> None:
    """The motion adapter (with encoding the clip windows, their appearance and captions)."""
    _plan("motion", **locals())


@plan_app.command("compose", cls=GroupedCommand)
def plan_compose(
    backbone: str = BACKBONE,
    frames: int = FRAMES,
    gpu_memory: str = GPU_MEMORY,
    fp8: bool = FP8,
    blocks_to_swap: int = BLOCKS_TO_SWAP,
    json: bool = JSON,
) -> None:
    """Composing a video: the prompt, a sampling step (both guidance branches) and the decode."""
    _plan("compose", **locals())


def _plan(
    stage: str,
    *,
    backbone: str,
    frames: int | None,
    gpu_memory: str | None,
    json: bool,
    fp8: bool,
    blocks_to_swap: int,
    batch_size: int | None = None,
    processes: int = 1,
    shard: bool = False,
    gradient_checkpointing: bool = False,
    offload_activations: bool = False,
) -> None:
    # What a user can get wrong is checked before torch loads.
    budget = parse_size(gpu_memory) if gpu_memory is not None else None
    if blocks_to_swap < 0:
        raise DVError(f"--blocks-to-swap must be 0 or more, got {blocks_to_swap}", "use --blocks-to-swap 0")
    for name, value in (("--frames", frames), ("--batch-size", batch_size), ("--processes", processes)):
        if value is not None and value < 1:
            raise DVError(f"{name} must be at least 1, got {value}", f"use {name} 1")

    from dreamvideo_cli.plan import PlanRequest, Settings, fit, plan_stage
    from dreamvideo_cli.plugins import get_backbone

    get_backbone(backbone)  # an unknown name is one line, before anything is built
    request = PlanRequest(
        stage, backbone, frames=frames, batch_size=batch_size, processes=processes, shard=shard,  # type: ignore[arg-type]
        settings=Settings(gradient_checkpointing, fp8, blocks_to_swap, offload_activations),
    )  # fmt: skip
    if budget is None:
        budget = detected_gpu_memory()
    planned: dict[Any, StagePlan] = {}

    def planner(r: PlanRequest) -> StagePlan:
        if r not in planned:
            planned[r] = plan_stage(r)
        return planned[r]

    def progress(attempt: Any) -> None:
        if not json:
            state = "fits" if attempt.fits else "does not fit"
            info(
                f"  {attempt.settings.describe(stage)}: {attempt.gpu_peak / 2**30:.1f} GiB, {state} ({attempt.seconds:.0f} s)"
            )

    if budget is not None and not json:
        info(f"planning {stage} on {backbone} for {budget / 2**30:.1f} GiB, cheapest settings first")
    found = fit(request, budget, planner=planner, on_attempt=progress) if budget is not None else None
    plan = planner(request)
    from dreamvideo_cli.plan.limits import available_memory

    available = available_memory()
    if json:
        print_json(
            {
                "stage": stage,
                "backbone": backbone,
                "plan": plan.as_dict(),
                "fit": None if found is None else found.as_dict() | {"plan": found.plan.as_dict()},
                "host_available": available or None,  # this machine's, now (bytes)
            }
        )
        return
    _render(plan, "as asked")
    if found is not None:
        _render_fit(found)
    host = (found.plan if found is not None and found.settings is not None else plan).host_peak  # one process's
    if available and host > available:
        warn(
            f"the run's host memory ({host / 2**30:.1f} GiB for dv's tensors) is more than this machine has "
            f"available ({available / 2**30:.1f} GiB): run it where there is more"
        )


def _unit(largest: int) -> tuple[str, int]:
    """GiB, or MiB/KiB for a small (test) model whose figures would all read 0.00 GiB."""
    for name, size in (("GiB", 2**30), ("MiB", 2**20)):
        if largest >= size:
            return name, size
    return "KiB", 2**10


def _render(plan: StagePlan, label: str) -> None:
    from rich.table import Table

    unit, unit_bytes = _unit(max(plan.gpu_peak, plan.host_peak))

    def _gib(n: int) -> str:
        return f"{n / unit_bytes:.2f}"

    r = plan.request
    size = f"{plan.width}x{plan.height}" + (f", {plan.frames} frames" if r.stage != "subject" else "")
    out.print(
        f"{r.stage} on {r.backbone} ({size}, batch {plan.batch_size}; {r.settings.describe(r.stage)})"
        f"{'' if r.processes == 1 else f', per process of {r.processes}'}: {label}"
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in (
        "phase",
        "GPU weights",
        "trainable",
        "activations",
        "peak",
        "host weights",
        "trainable",
        "activations",
        "peak",
    ):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for p in plan.phases:
        g, h = p.gpu, p.host
        table.add_row(
            p.name, _gib(g.weights), _gib(g.trainable), _gib(g.activations + g.cache), _gib(g.peak),
            _gib(h.weights), _gib(h.trainable), _gib(h.activations + h.cache), _gib(h.peak),
        )  # fmt: skip
    table.add_row("stage peak", "", "", "", _gib(plan.gpu_peak), "", "", "", _gib(plan.host_peak), style="bold")
    out.print(table)
    out.print(
        f"{unit}; activations include cached latents and embeddings. The GPU peak is reached in "
        f"{plan.peak_phase().name} ({plan.peak_phase().where or 'as it starts'}). Planned in {plan.seconds:.1f} s "
        "on fake tensors; the Python process and CUDA context come on top."
    )


def _render_fit(found: Fit) -> None:
    budget = f"{found.budget / 2**30:.1f} GiB"
    kept = f"{found.headroom / 2**30:.1f} GiB kept for the CUDA context and fragmentation"
    if found.settings is None:
        out.print(f"nothing fits {budget} ({kept}): {found.reason}")
        return
    request = found.plan.request
    if found.settings == request.settings and len(found.attempts) == 1:
        out.print(f"fits {budget} ({kept}) as asked")
    else:
        out.print(f"fits {budget} ({kept}) with {found.settings.describe(request.stage)}:")
        _render(found.plan, "fitted")
    out.print(f"run: {found.command()}")
    out.print(f"host memory for dv's tensors: {found.plan.host_peak / 2**30:.1f} GiB (the process itself comes on top)")
    for s in found.slowdowns():
        out.print(
            f"estimate: {s.phase} copies {s.moved / 1e9:.1f} GB per step between host and GPU, "
            f"{s.transfer_seconds:.2f} s over PCIe 4.0 x16 (25 GB/s) against {s.compute_seconds:.2f} s of compute "
            f"at half an H100's bf16 peak: {s.serial:.2f}x the step's time if no copy overlaps compute, "
            f"{s.overlapped:.2f}x if all do"
        )
