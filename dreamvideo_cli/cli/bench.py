"""`dv bench`: speed and memory of the engine against plain eager diffusers."""

from __future__ import annotations

import os

import typer

from dreamvideo_cli.cli._help import GroupedCommand
from dreamvideo_cli.cli._output import out, print_json


def install(app: typer.Typer) -> None:
    app.command("bench", cls=GroupedCommand)(bench)


def bench(
    backbone: str = typer.Option("modelscope", "--backbone", "-b", help="Backbone name (see `dv backbones`)."),
    backbone_path: str = typer.Option(None, "--backbone-path", help="A local diffusers folder of the backbone."),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="Full-size architecture with random weights (no download)."
    ),
    frames: int = typer.Option(
        None, "--frames", help="Frames for the motion step and compose (default: the backbone's)."
    ),
    sample_steps: int = typer.Option(
        50,
        "--sample-steps",
        help="Sampling steps of the compose measurement (the backbone's sampler: DDIM for ModelScope, UniPC for Wan).",
    ),
    repeats: int = typer.Option(5, "--repeats", help="Timed repetitions of each training step."),
    gradient_checkpointing: bool = typer.Option(
        False, "--gradient-checkpointing", help="Measure the motion step with checkpointing."
    ),
    compile: bool = typer.Option(
        False, "--compile", help="Measure the dv training steps with the denoiser compiled (CUDA graphs on a GPU)."
    ),
    only: str = typer.Option(
        "subject,motion,compose", "--only", help="Comma-separated subset of subject, motion, compose."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Time the subject step, the motion step and a full compose, both ways, in one run. Under
    torchrun or accelerate launch, also the data-parallel step over the processes and its
    scaling against one process."""
    from dreamvideo_cli.bench import BenchConfig, run_bench
    from dreamvideo_cli.cli._progress import ProgressRenderer
    from dreamvideo_cli.errors import DVError

    stages = tuple(s.strip() for s in only.split(",") if s.strip())
    unknown = set(stages) - {"subject", "motion", "compose"}
    if unknown:
        raise DVError(f"unknown bench stage {sorted(unknown)[0]!r}", "use --only subject,motion,compose")
    config = BenchConfig(
        backbone=backbone,
        backbone_path=backbone_path,
        random_weights=random_weights,
        frames=frames,
        sample_steps=sample_steps,
        repeats=repeats,
        gradient_checkpointing=gradient_checkpointing,
        compile=compile,
        device=device,
        only=stages,
    )
    with ProgressRenderer() as progress:
        report = run_bench(config, on_event=progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under a launcher, rank 0 reports for all
        return
    if json:
        print_json(report)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ("stage", "path", "ms/step", "speed-up", "samples/s", "peak GiB", "TFLOP/step", "TFLOP/s", "of peak")
    for column in columns:
        table.add_column(column)
    for r in report["results"]:
        speedup = f"{report['speedup'][r['name']]:.2f}x" if r["path"] == "dv" else ""
        table.add_row(
            r["name"],
            r["path"],
            f"{r['seconds_per_step'] * 1000:.1f}",
            speedup,
            f"{r['samples_per_second']:.2f}" if r["samples_per_second"] is not None else "",
            f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "",
            f"{r['tflop_per_step']:.3f}" if r["tflop_per_step"] is not None else "",
            f"{r['achieved_tflops']:.2f}" if r["achieved_tflops"] is not None else "",
            f"{r['fraction_of_peak']:.1%}" if r["fraction_of_peak"] is not None else "",
        )
    out.print(f"device: {report['device']}, backbone: {report['backbone']['backbone']}, frames: {report['frames']}")
    out.print(table)
    for name, efficiency in report["scaling"].items():
        out.print(
            f"{name}: {report['processes']} processes reach {efficiency:.0%} of {report['processes']}x one process's samples/s"
        )
