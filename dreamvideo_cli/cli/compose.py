"""`dv compose SUBJECT MOTION PROMPT`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from dreamvideo_cli.cli._help import with_examples
from dreamvideo_cli.cli._memory_options import BLOCKS_TO_SWAP, FIT, FP8, fitted
from dreamvideo_cli.cli._output import out, print_json
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.plan import Settings  # plain data, no torch

EXAMPLES = (
    'dv compose dog bear-walk "in the snow"',
    'dv compose dog - "on the beach"                       # the subject alone',
    'dv compose dog bear-walk "{subject} {motion} in the rain" --seed 7 -o rain.mp4',
    'dv compose dog:v1-step500,dog:v1 bear-walk "in the snow" --subject-scale 0.5,1 -o sweep/',
)

OUTPUT, SAMPLING, ADAPTERS, SWEEPS, DEVICE = "Output", "Sampling", "Adapters", "Sweeps", "Device and memory"


def install(app: typer.Typer) -> None:
    app.command("compose", cls=with_examples(*EXAMPLES))(compose)


def compose(
    subject: str = typer.Argument(
        ...,
        metavar="SUBJECT",
        help="A subject (name or name:tag, see `dv list`), or - for none; a comma list sweeps checkpoints.",
        show_default=False,
    ),
    motion: str = typer.Argument(
        ...,
        metavar="MOTION",
        help="A motion, or - for none; a comma list sweeps checkpoints.",
        show_default=False,
    ),
    prompt: str = typer.Argument(
        "",
        metavar="[PROMPT]",
        help='The scene, in quotes: "in the snow". It may place the subject and motion itself with '
        "the words {subject} and {motion}.",
        show_default=False,
    ),
    output: Path = typer.Option(
        None,
        "-o",
        "--output",
        metavar="PATH",
        help="Video file (.mp4 or .gif); default dv-out/SUBJECT-MOTION-SEED.mp4. A sweep: a folder (default dv-out/SUBJECT-MOTION-SEED-sweep).",
        rich_help_panel=OUTPUT,
    ),
    steps: int = typer.Option(
        None,
        "--sample-steps",
        metavar="N",
        help="Sampling steps (default: the backbone's, ModelScope 50 DDIM, Wan 50 UniPC).",
        rich_help_panel=SAMPLING,
    ),
    guidance: float = typer.Option(
        None,
        "--guidance",
        metavar="SCALE",
        help="Classifier-free guidance scale (default: the backbone's, ModelScope 9, Wan 5).",
        rich_help_panel=SAMPLING,
    ),
    expert_guidance: str = typer.Option(
        "",
        "--expert-guidance",
        show_default=False,
        metavar="EXPERT=SCALE,...",
        help="On a backbone of several experts: the guidance on each named expert's steps, "
        "e.g. high=4,low=3 on wan2.2-a14b (default: its own, low 3; the rest take --guidance).",
        rich_help_panel=SAMPLING,
    ),
    frames: int = typer.Option(
        None, "--frames", metavar="N", help="Frames (default: the backbone's).", rich_help_panel=SAMPLING
    ),
    fps: int = typer.Option(
        None,
        "--fps",
        metavar="N",
        help="Frame rate of the written video (default: the backbone's).",
        rich_help_panel=OUTPUT,
    ),
    seed: int = typer.Option(
        None, "--seed", metavar="N", help="Random seed (recorded in the metadata).", rich_help_panel=SAMPLING
    ),
    subject_scale: str = typer.Option(
        "1",
        "--subject-scale",
        metavar="SCALES",
        help="Strength of the identity adapter; a comma list (0.5,0.75,1) sweeps it.",
        rich_help_panel=ADAPTERS,
    ),
    motion_scale: str = typer.Option(
        "1",
        "--motion-scale",
        metavar="SCALES",
        help="Strength of the motion adapter; a comma list sweeps it.",
        rich_help_panel=ADAPTERS,
    ),
    metric: list[str] = typer.Option(
        None,
        "--metric",
        "-m",
        metavar="NAME",
        help="Score every cell of a sweep with this metric (repeat for more; see `dv metrics`) and mark "
        "the best by the first.",
        rich_help_panel=SWEEPS,
    ),
    appearance_image: Path = typer.Option(
        None,
        "--appearance-image",
        metavar="PATH",
        help="Image for appearance guidance (default: a subject photo).",
        rich_help_panel=ADAPTERS,
    ),
    appearance_strength: float = typer.Option(
        1.0,
        "--appearance-strength",
        metavar="LAMBDA",
        help="lambda, the appearance-guidance strength.",
        rich_help_panel=ADAPTERS,
    ),
    sampler: str = typer.Option(
        None,
        "--sampler",
        metavar="NAME",
        help="Sampler name (see `dv samplers`; default: the backbone's, ddim or unipc).",
        rich_help_panel=SAMPLING,
    ),
    negative_prompt: str = typer.Option(
        "",
        "--negative-prompt",
        metavar="TEXT",
        help='What the video should not show, e.g. "blurry, distorted" (guidance steers away from it).',
        rich_help_panel=SAMPLING,
        show_default=False,
    ),
    gif: bool = typer.Option(False, "--gif", help="Also write a GIF beside the video.", rich_help_panel=OUTPUT),
    device: str = typer.Option(
        "auto", "--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N.", rich_help_panel=DEVICE
    ),
    backbone_path: str = typer.Option(
        None,
        "--backbone-path",
        metavar="DIR",
        help="A local diffusers folder of the backbone.",
        rich_help_panel=DEVICE,
    ),
    fp8: bool = FP8,
    blocks_to_swap: int = BLOCKS_TO_SWAP,
    fit: str = FIT,
    force: bool = typer.Option(
        False,
        "--force",
        "-f",
        help="Replace the video at -o (a sweep: the earlier sweep in the -o folder).",
        rich_help_panel=OUTPUT,
    ),
    json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout.", rich_help_panel=OUTPUT),
) -> None:
    """Make a video of SUBJECT doing MOTION in PROMPT."""
    import secrets

    from dreamvideo_cli.compose_inputs import check_counts, check_free, check_output, free_name, resolve_pair
    from dreamvideo_cli.sweep import (
        check_sweep_folder,
        is_sweep,
        parse_expert_guidance,
        parse_scales,
        split_list,
        sweep_cells,
    )
    from dv_registry import Registry

    # What a user can get wrong is checked before torch loads (seconds on a cold start).
    registry = Registry()
    subjects, motions = split_list(subject) or ["-"], split_list(motion) or ["-"]
    subject_scales = parse_scales(subject_scale, "--subject-scale")
    motion_scales = parse_scales(motion_scale, "--motion-scale")
    guidance_per_expert = parse_expert_guidance(expert_guidance)
    pairs = [resolve_pair(registry, s_ref, m_ref) for s_ref in subjects for m_ref in motions]
    check_counts(steps, frames)
    if fit is not None:
        trained_on = next(m for pair in pairs for m in pair if m is not None).backbone["backbone"]
        levers = fitted(
            "compose", fit, None, Settings(fp8=fp8, blocks_to_swap=blocks_to_swap), backbone=trained_on, frames=frames
        )
        fp8, blocks_to_swap = levers.fp8, levers.blocks_to_swap
    sweep = is_sweep(subjects, motions, subject_scales, motion_scales)
    cells = sweep_cells(subjects, motions, subject_scales, motion_scales) if sweep else []
    if output is not None and not sweep:
        check_free(check_output(output), gif, force)  # nothing is overwritten silently
    if output is not None and sweep:
        check_sweep_folder(output, force)
    if seed is None:
        seed = secrets.randbelow(2**31 - 1)

    from dreamvideo_cli.composition import ComposeConfig
    from dreamvideo_cli.composition import compose as run_compose

    if output is None:
        stem = "-".join(p.replace(":", "_").replace("@", "_").replace(",", "+") for p in (subject, motion) if p != "-")
        # A default name is never an earlier result's: the same seed with a new prompt gets `-2`.
        output = free_name(Path("dv-out"), f"{stem}-{seed}" + ("-sweep" if sweep else ""), "" if sweep else ".mp4", gif)
    if not sweep:
        output.parent.mkdir(parents=True, exist_ok=True)
    config = ComposeConfig(
        steps=steps,
        guidance=guidance,
        frames=frames,
        fps=fps,
        seed=seed,
        subject_scale=subject_scales[0],
        motion_scale=motion_scales[0],
        appearance_strength=appearance_strength,
        appearance_image=str(appearance_image) if appearance_image else None,
        sampler=sampler,
        negative_prompt=negative_prompt,
        gif=gif,
        device=device,
        backbone_path=backbone_path,
        fp8=fp8,
        blocks_to_swap=blocks_to_swap,
        expert_guidance=guidance_per_expert,
    )
    from dreamvideo_cli.cli._progress import ProgressRenderer

    if sweep:
        _sweep(cells, prompt, output, config, registry, metric or [], json, force)
        return
    if metric:
        raise DVError("--metric scores the cells of a sweep", "score a single video with `dv eval VIDEO --metric ...`")
    with ProgressRenderer() as progress:
        result = run_compose(subject, motion, prompt, output, config, registry=registry, on_event=progress)
    if json:
        print_json(
            {
                "output": str(result.video),
                "contact_sheet": str(result.contact_sheet),
                "gif": str(result.gif) if result.gif else None,
                "prompt": result.prompt,
                "seed": result.seed,
                "metadata": result.metadata,
            }
        )
        return
    # The prompt was shown with the progress (stderr), and is in the video's metadata and
    # the JSON: stdout does not say it again.
    out.print(f"wrote {result.video} and {result.contact_sheet}" + (f" and {result.gif}" if result.gif else ""))


def _sweep(
    cells: list[Any], prompt: str, folder: Path, config: Any, registry: Any, metrics: list[str], json: bool, force: bool
) -> None:
    from dreamvideo_cli.cli._progress import ProgressRenderer
    from dreamvideo_cli.sweep import run_sweep

    if folder.suffix.lower() in (".mp4", ".gif"):
        raise DVError(f"a sweep writes a folder of videos, not {folder.name}", f"use -o {folder.with_suffix('')}")
    with ProgressRenderer() as progress:
        result = run_sweep(
            cells, prompt, folder, config, registry=registry, metrics=metrics, on_event=progress, force=force
        )
    if json:
        print_json(
            {
                "output": str(result.folder),
                "grid": str(result.grid),
                "index": str(result.index),
                "best": result.best,
                "cells": result.cells,
            }
        )
        return
    out.print(
        f"wrote {len(result.cells)} videos, {result.grid} and {result.index}"
        + (f"; best by {metrics[0]}: {result.best}" if result.best else "")
    )
