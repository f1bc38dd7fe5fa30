"""`dv eval VIDEO...` and `dv eval --grid`: score videos, or compose and score a whole grid."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dreamvideo_cli.cli._output import out, print_json
from dreamvideo_cli.errors import DVError

if TYPE_CHECKING:
    from rich.table import Table

    from dreamvideo_cli.evaluate import GridResult, VideoScores


def install(app: typer.Typer) -> None:
    """Add `dv eval` to the app (once, however often it is called)."""
    if any(command.name == "eval" for command in app.registered_commands):
        return
    app.command("eval")(eval_command)


def eval_command(
    videos: list[Path] = typer.Argument(None, help="Videos, or folders of videos, to score."),
    subject: str = typer.Option(None, "--subject", help="Subject whose photos CLIP-I/DINO-I compare with (default: the one compose recorded)."),
    prompt: str = typer.Option(None, "--prompt", help="Text CLIP-T compares with (default: the prompt compose recorded)."),
    metric: list[str] = typer.Option(None, "--metric", "-m", help="A metric to compute; repeat or separate with commas (default: all installed, see `dv metrics`)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under accelerate: each process's own GPU)."),
    json: bool = typer.Option(False, "--json", help="Print the scores as JSON on stdout."),
    grid: bool = typer.Option(False, "--grid", help="Compose and score every subject x motion x prompt x seed."),
    subjects: str = typer.Option(None, "--subjects", help="Grid: subjects, comma-separated (- for none)."),
    motions: str = typer.Option(None, "--motions", help="Grid: motions, comma-separated (- for none)."),
    prompts: Path = typer.Option(None, "--prompts", help="Grid: a text file with one prompt per line."),
    output: Path = typer.Option(None, "-o", "--output", help="Grid: folder for the videos and results (re-running resumes)."),
    seeds: int = typer.Option(1, "--seeds", help="Grid: seeds per cell, SEED, SEED+1, ..."),
    seed: int = typer.Option(0, "--seed", help="Grid: the first seed."),
    steps: int = typer.Option(None, "--steps", help="Grid: sampling steps (default: the backbone's)."),
    guidance: float = typer.Option(None, "--guidance", help="Grid: classifier-free guidance scale (default: the backbone's)."),
    frames: int = typer.Option(None, "--frames", help="Grid: frames per video (default: the backbone's)."),
    fps: int = typer.Option(None, "--fps", help="Grid: frame rate of the written videos."),
    sampler: str = typer.Option(None, "--sampler", help="Grid: sampler name (see `dv samplers`; default: the backbone's)."),
    subject_scale: float = typer.Option(1.0, "--subject-scale", help="Grid: strength of the identity adapter."),
    motion_scale: float = typer.Option(1.0, "--motion-scale", help="Grid: strength of the motion adapter."),
    appearance_strength: float = typer.Option(1.0, "--appearance-strength", help="Grid: lambda, the appearance-guidance strength."),
    negative_prompt: str = typer.Option("", "--negative-prompt", help="Grid: negative prompt."),
    backbone_path: str = typer.Option(None, "--backbone-path", help="Grid: a local diffusers folder of the backbone."),
) -> None:
    """Score videos with CLIP-T, CLIP-I, DINO-I, temporal consistency (and any installed metric).

    With --grid, compose every subject x motion x prompt x seed into -o DIR and score each;
    run it under `accelerate launch` to split the cells across processes or GPUs.
    """
    from dreamvideo_cli.cli._progress import ProgressRenderer
    from dv_registry import Registry

    if not grid:
        if not videos:
            raise DVError("no videos to score", "usage: dv eval VIDEO... or dv eval --grid ...")
        grid_only = {"--subjects": subjects, "--motions": motions, "--prompts": prompts, "-o": output}
        given = [flag for flag, value in grid_only.items() if value is not None]
        if given:
            raise DVError(f"{', '.join(given)} only apply to a grid", "add --grid")
        from dreamvideo_cli.evaluate import evaluate_videos

        with ProgressRenderer(quiet=json) as progress:
            scores = evaluate_videos(
                videos, registry=Registry(), subject=subject, prompt=prompt, metrics=metric, device=device, on_event=progress
            )
        _show_scores(scores, json)
        return

    if videos:
        raise DVError("--grid composes its own videos; it takes no VIDEO arguments", "drop the videos or --grid")
    if subject is not None or prompt is not None:
        raise DVError("--subject and --prompt score given videos; a grid takes --subjects and --prompts", "use --subjects A,B --prompts FILE")
    if output is None or prompts is None:
        raise DVError("a grid needs -o DIR and --prompts FILE", "e.g. dv eval --grid --subjects dog --motions walk --prompts prompts.txt -o grid/")
    if seeds < 1:
        raise DVError("--seeds must be at least 1", "pass --seeds 1 or more")

    from dreamvideo_cli.compose import ComposeConfig
    from dreamvideo_cli.evaluate import GridSpec, read_prompts, run_grid

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
            subject_scale=subject_scale,
            motion_scale=motion_scale,
            appearance_strength=appearance_strength,
            sampler=sampler,
            negative_prompt=negative_prompt,
            device=device,
            backbone_path=backbone_path,
        ),
        metrics=metric or None,
    )
    main_process = _is_main_process()
    # Under accelerate every process renders its own progress; only process 0 talks.
    with ProgressRenderer(quiet=json or not main_process) as progress:
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
    import os

    return os.environ.get("RANK", "0") == "0"


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def _show_scores(scores: list[VideoScores], json: bool) -> None:
    names = list(dict.fromkeys(name for s in scores for name in [*s.scores, *s.skipped]))
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
    out.print(f"[bold]{summary['scored']}[/bold] of {summary['cells']} cells scored" + (f", {summary['failed']} failed" if summary["failed"] else ""))
    table = _table("", "cells", *names)
    table.add_row("overall", str(summary["scored"]), *(_fmt(summary["overall"][n]) for n in names))
    for title, groups in (("subject", summary["per_subject"]), ("motion", summary["per_motion"])):
        for group, data in groups.items():
            table.add_row(f"{title} {group}", str(data["cells"]), *(_fmt(data["means"][n]) for n in names))
    out.print(table)
    out.print("wrote " + ", ".join(files.values()))
