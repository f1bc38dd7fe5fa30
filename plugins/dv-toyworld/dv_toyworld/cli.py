"""`dv demo`, added to the `dv` app through the register_commands hook.

Only typer is imported here: this module loads on every `dv` start-up."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import typer

QUICK_ENV = "DV_TOYWORLD_DEMO_QUICK"  # "1": a few steps of everything (tests)


def install(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(
        Path("dv-demo"), "-o", "--output", help="Folder for the photos, clips, videos, contact sheet and table."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the data, the learning and the sampling."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto; the toy model is fastest on a CPU."),
    seeds: int = typer.Option(
        None, "--seeds", min=1, help="Videos per row, scored and averaged (mean ± standard error) [default: 4]."
    ),
    motion_scale: float = typer.Option(
        None, "--motion-scale", help="Strength of the motion adapter in compose [default: 1.0]."
    ),
    appearance_strength: float = typer.Option(
        None,
        "--appearance-strength",
        help="Appearance guidance (lambda) in compose; the motion adapter learns with 1 [default: 0.0].",
    ),
    json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    quick: bool = typer.Option(False, "--quick", hidden=True, help="A few steps of everything (tests)."),
) -> None:
    """Learn a subject from photos and a motion from clips on the built-in toy world,
    compose them, and compare with the backbone alone: offline, a few minutes on a CPU."""
    from dreamvideo_cli import ProgressRenderer, print_json, stdout
    from dv_registry import Registry
    from dv_toyworld.demo import DemoConfig, run_demo

    if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        _use_half_the_cores()
    config = DemoConfig(seed=seed, device=device)
    if seeds is not None:
        config = replace(config, seeds=seeds)
    if motion_scale is not None:
        config = replace(config, motion_scale=motion_scale)
    if appearance_strength is not None:
        config = replace(config, appearance_strength=appearance_strength)
    if quick or os.environ.get(QUICK_ENV, "") not in ("", "0"):
        config = config.quick()
    from dreamvideo_cli import Interrupted

    try:
        with ProgressRenderer() as progress:
            result = run_demo(out, config, Registry(), on_event=progress)
    except Interrupted:
        # The learning it stopped could be resumed, but `dv demo` starts over by design.
        raise Interrupted("dv demo stopped", "run `dv demo` again to start over") from None
    if json:
        print_json({"output": str(out), **result.as_json()})
        return
    from dv_toyworld.demo import metrics_table

    stdout.print(f"prompt: {result.prompt}", markup=False)
    stdout.print(f"backbone alone: {result.backbone_only_prompt}", markup=False)
    first, last = config.seed, config.seed + config.seeds - 1
    stdout.print(f"mean ± standard error over sampling seeds {first}..{last}:", markup=False)
    stdout.print(metrics_table(result.metrics, result.errors), markup=False)
    stdout.print(
        f"wrote {result.video}, {result.backbone_only_video}, {result.contact_sheet} and {result.table} in {result.seconds:.0f} s",
        markup=False,
    )
    hint = config.compose_command(result.subject, result.motion, "on grass")
    stdout.print(f"the subject and motion are in your registry: {hint}", markup=False)


def _use_half_the_cores() -> None:
    """The toy model's ops are too small to gain much from threads, and threads that share
    cores with other work thrash (docs/toyworld.md has the measurements). Half
    the cores (at most 4) keeps most of the speed and all of the robustness."""
    import torch

    from dv_toyworld.demo import available_cores

    torch.set_num_threads(max(1, min(4, available_cores() // 2)))
