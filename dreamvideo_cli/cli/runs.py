"""`dv runs list | rm | prune`: the training runs in `$DV_HOME/runs/`.

Every learn keeps its run folder (config, loss log and plot, checkpoints) so that Ctrl-C can be
resumed; a finished run's resumable state (the optimizer's moments: about 0.9 GB for a
ModelScope motion run) is only needed until its result is in the registry. `dv runs prune`
frees that; `dv runs rm` removes whole runs the user names. See `dreamvideo_cli.runs`.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dreamvideo_cli.cli._help import GroupedCommand
from dreamvideo_cli.cli._output import info, out, print_json, warn
from dreamvideo_cli.errors import DVError

if TYPE_CHECKING:
    from rich.table import Table

    from dreamvideo_cli.runs import RunInfo

JSON = typer.Option(False, "--json", help="Print JSON on stdout.")

runs_app = typer.Typer(
    help="Training runs: list them, free finished runs' resumable state, remove runs.",
    no_args_is_help=True,
)


def install(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs", rich_help_panel="Registry")


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def _runs() -> tuple[Path, list[RunInfo]]:
    """The registry's home and its runs, each knowing whether the registry holds its result."""
    from dreamvideo_cli.runs import find_runs
    from dv_registry import Registry

    registry = Registry()
    return registry.home, find_runs(registry.home, registry.list())


def _size(size: int) -> str:
    from dreamvideo_cli.cli.registry import human_size

    return human_size(size)


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _status(run: RunInfo) -> str:
    if run.status == "finished":
        return "finished" + (", resumable state kept" if run.state_bytes and not run.stored else "")
    if run.status == "resumable":
        return "resumable"
    if run.status == "incomplete":
        return "stopped, no saved state"
    return "unreadable"


def _stored(run: RunInfo) -> str:
    """The version(s) the run stored (`dog:v2`), not every tag pointing at them."""
    versions = [ref for ref in run.stored if re.fullmatch(r"v[1-9][0-9]*", ref.rsplit(":", 1)[-1])]
    return ", ".join(versions or list(run.stored)[:1]) or "-"


def _started(run: RunInfo) -> str:
    """Local time, as `dv list` shows when entries were created."""
    if run.started is None:
        return "-"
    return datetime.fromtimestamp(run.started).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _describe(run: RunInfo) -> str:
    what = f"{run.kind or '?'} {run.name or '?'}, {run.progress}, {_status(run)}, {_size(run.size)}"
    return f"{run.id} ({what})"


@runs_app.command("list", cls=GroupedCommand)
def list_command(json: bool = JSON) -> None:
    """List training runs: kind, name, when started, how long, progress, last loss, whether finished
    or resumable, and size."""
    from dreamvideo_cli.runs import runs_folder, runs_usage

    home, runs = _runs()
    if json:
        print_json([run.to_json() for run in runs])
        return
    if not runs:
        info(f"no training runs in {runs_folder(home)}")
        return
    table = _table(
        "id", "kind", "name", "started", "duration", "progress", "last loss", "status", "stored as", "size", "state"
    )
    for run in runs:
        from rich.text import Text

        table.add_row(
            Text(run.id),
            Text(run.kind or "?"),
            Text(run.name or "?"),
            _started(run),
            _duration(run.duration),
            Text(run.progress),
            f"{run.last_loss:.4g}" if run.last_loss is not None else "-",
            _status(run),
            Text(_stored(run)),
            _size(run.size),
            _size(run.state_bytes) if run.state_bytes else "-",
        )
    out.print(table)
    usage = runs_usage(runs, home)
    info(
        f"{_size(usage.bytes)} in {usage.count} run(s) in {usage.folder}; "
        f"`dv runs prune` would free {_size(usage.prunable_bytes)}"
    )


@runs_app.command("rm", cls=GroupedCommand)
def rm_command(
    ids: list[str] = typer.Argument(..., metavar="ID...", help="Run ids, as `dv runs list` shows them."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    json: bool = JSON,
) -> None:
    """Remove whole training runs, resumable or not. What they stored stays in the registry."""
    from dreamvideo_cli.runs import remove_runs, resolve_ids

    home, runs = _runs()
    by_id = {run.id: run for run in runs}
    chosen = [by_id[folder.name] for folder in resolve_ids(home, ids)]  # fails if any id is unknown
    if dry_run:
        if json:
            print_json({"dry_run": True, "removed": [run.to_json() for run in chosen]})
        for run in chosen:
            info(f"would remove run {_describe(run)}")
        return
    resumable = [run.id for run in chosen if run.resumable and not run.finished]
    if not yes:
        if not _stdin_is_tty():
            raise DVError(
                f"refusing to remove {len(chosen)} run(s) without confirmation",
                "pass --yes, or --dry-run to see what would go",
            )
        for run in chosen:
            info(f"this removes run {_describe(run)}")
        if resumable:
            warn(f"{', '.join(resumable)} could still be resumed; removing loses that training")
        typer.confirm("Remove them?", abort=True, err=True)
    remove_runs(home, [run.folder for run in chosen])
    if json:
        print_json({"dry_run": False, "removed": [run.to_json() for run in chosen]})
    for run in chosen:
        kept = f"; {', '.join(run.stored)} stay(s) in the registry" if run.stored else ""
        info(f"removed run {run.id} ({_size(run.size)}){kept}")


@runs_app.command("prune", cls=GroupedCommand)
def prune_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    json: bool = JSON,
) -> None:
    """Free the resumable state (optimizer and training state) of finished runs whose result is
    in the registry. Their config, loss log, plot and checkpoint adapters stay."""
    from dreamvideo_cli.runs import prune_runs

    home, runs = _runs()
    pruned = prune_runs(runs, home, dry_run=dry_run)
    # Finished runs whose result is not in the registry: resuming one stores it, so keep it.
    kept = [run for run in runs if run.finished and run.state_bytes and not run.stored]
    freed = sum(item.bytes for item in pruned)
    if json:
        print_json(
            {
                "dry_run": dry_run,
                "bytes_freed": freed,
                "runs": [{"id": p.id, "files": list(p.files), "bytes": p.bytes} for p in pruned if not p.leftover],
                "leftovers": [{"path": p.id, "bytes": p.bytes} for p in pruned if p.leftover],
                "kept": [run.id for run in kept],
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for item in pruned:
        if item.leftover:
            info(f"{verb} {item.id}, left by an interrupted `dv runs rm` ({_size(item.bytes)})")
        else:
            info(f"{verb} the resumable state of run {item.id}: {', '.join(item.files)} ({_size(item.bytes)})")
    for run in kept:
        resume = f"`dv {run.kind} learn --resume {run.id}` stores it, " if run.kind else ""
        info(
            f"kept the state of finished run {run.id} ({_size(run.state_bytes)}): its result is not in "
            f"the registry; {resume}`dv runs rm {run.id}` removes the run"
        )
    if not pruned:
        out.print("nothing to prune", markup=False)
    else:
        out.print(f"{'would free' if dry_run else 'freed'} {_size(freed)}", markup=False)
