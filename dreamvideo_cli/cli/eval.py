"""`dv eval VIDEO...` scores videos; `dv eval grid ...` composes and scores a whole grid.

The engine (evaluate, grid, the registry) is imported inside the commands: `dv --help`
builds this group without importing numpy, torch or rich.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from dreamvideo_cli.cli._help import GroupedCommand, with_examples
from dreamvideo_cli.cli._output import out, print_json
from dreamvideo_cli.errors import DVError

if TYPE_CHECKING:
    from rich.table import Table

    from dreamvideo_cli.evaluate import VideoScores
    from dreamvideo_cli.grid import GridResult

# The command that scores videos has no name of its own: `dv eval VIDEO...` is it.
_SCORE = "score-videos"


class EvalGroup(TyperGroup):
    """`dv eval`: a subcommand (`grid`) by name, else the videos to score."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        named = {name for name, command in self.commands.items() if not command.hidden}
        if not args or (args[0] not in named and args[0] not in ctx.help_option_names):
            args = [_SCORE, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # The help of scoring videos (its usage, text and options), then the subcommands.
        score = self.commands[_SCORE]
        score.format_usage(ctx, formatter)
        formatter.write_usage(ctx.command_path, "grid SUBJECTS MOTIONS [OPTIONS]", prefix="   or: ")
        score.format_help_text(ctx, formatter)
        score.format_options(ctx, formatter)
        self.format_commands(ctx, formatter)


eval_app = typer.Typer(
    cls=EvalGroup,
    help="Score videos, or compose and score a grid (dv eval grid).",
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def install(app: typer.Typer) -> None:
    """Add `dv eval` to the app (once, however often it is called)."""
    installed = [command.name for command in app.registered_commands]
    installed += [group.name for group in app.registered_groups]
    if "eval" in installed:
        return
    app.add_typer(eval_app, name="eval")


# ---------------------------------------------------------------- options

METRIC = typer.Option(
    None,
    "--metric",
    "-m",
    metavar="NAME",
    help="A metric to compute; repeat or separate with commas (default: all installed, see `dv metrics`).",
)
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under accelerate: each process's own GPU).")
SUBJECTS_HELP = "Subjects, a comma list as in dv compose (- for none)."
MOTIONS_HELP = "Motions, a comma list as in dv compose (- for none)."
PROMPTS_HELP = "A text file with one prompt per line."
OUTPUT_HELP = "Folder for the videos and results (re-running resumes)."
SEEDS_HELP = "Seeds per cell, SEED, SEED+1, ..."
SEED_HELP = "The first seed."
STEPS_HELP = "Sampling steps (default: the backbone's)."
GUIDANCE_HELP = "Classifier-free guidance scale (default: the backbone's)."
FRAMES_HELP = "Frames per video (default: the backbone's)."
FPS_HELP = "Frame rate of the written videos."
SAMPLER_HELP = "Sampler name (see `dv samplers`; default: the backbone's)."
SUBJECT_SCALE_HELP = "Strength of the identity adapter; a comma list (0.5,1) sweeps it, as in dv compose."
MOTION_SCALE_HELP = "Strength of the motion adapter; a comma list sweeps it."
APPEARANCE_HELP = "lambda, the appearance-guidance strength."
NEGATIVE_HELP = "Negative prompt."
BACKBONE_PATH_HELP = "A local diffusers folder of the backbone."


# ---------------------------------------------------------------- dv eval VIDEO...


@eval_app.command(_SCORE, hidden=True, cls=GroupedCommand)
def eval_command(
    videos: list[Path] = typer.Argument(
        None, metavar="VIDEO...", help="Videos, or folders of videos, to score.", show_default=False
    ),
    subject: str = typer.Option(
        None, "--subject", help="Subject whose photos CLIP-I/DINO-I compare with (default: the one compose recorded)."
    ),
    prompt: str = typer.Option(
        None, "--prompt", help="Text CLIP-T compares with (default: the prompt compose recorded)."
    ),
    metric: list[str] = METRIC,
    device: str = DEVICE,
    json: bool = typer.Option(False, "--json", help="Print the scores as JSON on stdout."),
) -> None:
    """Score videos with CLIP-T, CLIP-I, DINO-I, temporal consistency (and any installed metric).

    `dv eval grid ...` composes every subject x motion x prompt x seed and scores each; run it
    under `accelerate launch` to split the cells across processes or GPUs.
    """
    if not videos:
        raise DVError("no videos to score", "usage: dv eval VIDEO... or dv eval grid ...")
    from dreamvideo_cli.cli._progress import ProgressRenderer
    from dreamvideo_cli.evaluate import evaluate_videos, incomplete
    from dv_registry import Registry

    with ProgressRenderer() as progress:
        scores = evaluate_videos(
            videos,
            registry=Registry(),
            subject=subject,
            prompt=prompt,
            metrics=metric,
            device=device,
            on_event=progress,
        )
    _show_scores(scores, json)
    problem = incomplete(scores)  # after the scores that could be computed are shown
    if problem is not None:
        raise problem


# ---------------------------------------------------------------- dv eval grid


@eval_app.command(
    "grid",
    cls=with_examples(
        "dv eval grid dog,cat bear-walk,ride-bike --prompts prompts.txt -o grid/ --seeds 2",
        "dv eval grid dog - --prompts prompts.txt -o subject-only/      # no motion adapter",
        'accelerate launch --multi_gpu --num_processes 8 "$(which dv)" eval grid dog,cat walk --prompts p.txt -o g/',
    ),
)
def grid_command(
    subjects: str = typer.Argument(..., help=SUBJECTS_HELP, metavar="SUBJECTS", show_default=False),
    motions: str = typer.Argument(..., help=MOTIONS_HELP, metavar="MOTIONS", show_default=False),
    prompts: Path = typer.Option(None, "--prompts", help=PROMPTS_HELP),
    output: Path = typer.Option(None, "-o", "--output", help=OUTPUT_HELP),
    seeds: int = typer.Option(1, "--seeds", help=SEEDS_HELP),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    metric: list[str] = METRIC,
    device: str = DEVICE,
    json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    steps: int = typer.Option(None, "--sample-steps", help=STEPS_HELP),
    guidance: float = typer.Option(None, "--guidance", help=GUIDANCE_HELP),
    frames: int = typer.Option(None, "--frames", help=FRAMES_HELP),
    fps: int = typer.Option(None, "--fps", help=FPS_HELP),
    sampler: str = typer.Option(None, "--sampler", help=SAMPLER_HELP),
    subject_scale: str = typer.Option("1", "--subject-scale", metavar="SCALES", help=SUBJECT_SCALE_HELP),
    motion_scale: str = typer.Option("1", "--motion-scale", metavar="SCALES", help=MOTION_SCALE_HELP),
    appearance_strength: float = typer.Option(1.0, "--appearance-strength", help=APPEARANCE_HELP),
    negative_prompt: str = typer.Option("", "--negative-prompt", help=NEGATIVE_HELP),
    backbone_path: str = typer.Option(None, "--backbone-path", help=BACKBONE_PATH_HELP),
    force: bool = typer.Option(
        False, "--force", "-f", help="Remove the cells of another grid found in -o DIR (the same grid resumes)."
    ),
) -> None:
    """Compose and score every subject x motion x prompt x seed into -o DIR.

    Run it under `accelerate launch` to split the cells across processes or GPUs; re-running
    the same command skips finished cells.
    """
    if output is None or prompts is None:
        raise DVError(
            "a grid needs -o DIR and --prompts FILE",
            "e.g. dv eval grid dog,cat walk --prompts prompts.txt -o grid/",
        )
    if seeds < 1:
        raise DVError("--seeds must be at least 1", "pass --seeds 1 or more")

    from dreamvideo_cli.cli._progress import ProgressRenderer
    from dreamvideo_cli.composition import ComposeConfig
    from dreamvideo_cli.grid import GridSpec, read_prompts, run_grid
    from dreamvideo_cli.sweep import parse_scales
    from dv_registry import Registry

    subject_scales = parse_scales(subject_scale, "--subject-scale")
    motion_scales = parse_scales(motion_scale, "--motion-scale")
    spec = GridSpec(
        subjects=_split(subjects) or ["-"],
        motions=_split(motions) or ["-"],
        prompts=read_prompts(prompts),
        seeds=[seed + i for i in range(seeds)],
        output=output,
        compose=ComposeConfig(
            steps=steps,
            guidance=guidance,
            frames=frames,
            fps=fps,
            subject_scale=subject_scales[0],
            motion_scale=motion_scales[0],
            appearance_strength=appearance_strength,
            sampler=sampler,
            negative_prompt=negative_prompt,
            device=device,
            backbone_path=backbone_path,
        ),
        metrics=metric or None,
        subject_scales=list(dict.fromkeys(subject_scales)) if len(subject_scales) > 1 else [],
        motion_scales=list(dict.fromkeys(motion_scales)) if len(motion_scales) > 1 else [],
        force=force,
    )
    main_process = _is_main_process()
    # Under accelerate every process renders its own progress; only process 0 talks (--json or not).
    with ProgressRenderer(quiet=not main_process) as progress:
        result = run_grid(spec, registry=Registry(), on_event=progress)
    if not result.is_main_process:
        return
    _show_grid(result, json)
    if result.failed:
        count = len(result.failed)
        raise DVError(
            f"{count} of {len(result.cells)} cells failed (first: {result.failed[0]}); see {result.files['results_json']}",
            "re-run the same command to retry them",
        )


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _is_main_process() -> bool:
    """Process 0 of an `accelerate launch` / torchrun group (the environment says, before any
    state is made), or a plain run."""
    return os.environ.get("RANK", "0") == "0"


# ---------------------------------------------------------------- output


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def _show_scores(scores: list[VideoScores], json: bool) -> None:
    names = list(dict.fromkeys(name for s in scores for name in [*s.scores, *s.skipped, *s.failed]))
    means = {}
    for name in names:
        values = [s.scores[name] for s in scores if name in s.scores]
        means[name] = sum(values) / len(values) if values else None
    if json:
        print_json({"videos": [s.as_dict() for s in scores], "mean": means})
        return
    table = _table("video", *names, "prompt")
    for s in scores:
        table.add_row(Path(s.video).name, *(_fmt(s.scores.get(n)) for n in names), s.prompt or "-")
    if len(scores) > 1:
        table.add_row("mean", *(_fmt(means[n]) for n in names), "")
    out.print(table)


def _show_grid(result: GridResult, json: bool) -> None:
    summary = result.summary
    files = {name: str(path) for name, path in result.files.items()}
    if json:
        print_json({"output": str(result.output), "summary": summary, "files": files, "failed": result.failed})
        return
    names = summary["metrics"]
    out.print(
        f"[bold]{summary['scored']}[/bold] of {summary['cells']} cells scored"
        + (f", {summary['failed']} failed" if summary["failed"] else "")
    )
    table = _table("", "cells", *names)
    table.add_row("overall", str(summary["scored"]), *(_fmt(summary["overall"][n]) for n in names))
    for title, groups in (("subject", summary["per_subject"]), ("motion", summary["per_motion"])):
        for group, data in groups.items():
            table.add_row(f"{title} {group}", str(data["cells"]), *(_fmt(data["means"][n]) for n in names))
    out.print(table)
    out.print("wrote " + ", ".join(files.values()))
