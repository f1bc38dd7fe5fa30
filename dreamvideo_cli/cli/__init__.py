"""The `dv` command line. One module per command group; this one only assembles them."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

import typer

from dreamvideo_cli import __version__
from dreamvideo_cli.cli import bench, compose, discovery, doctor, learn, registry
from dreamvideo_cli.cli import eval as eval_cli  # aliased: `eval` is a builtin
from dreamvideo_cli.cli import gallery as gallery_cli  # `dv gallery`
from dreamvideo_cli.cli import plan as plan_cli  # `dv plan`
from dreamvideo_cli.cli import runs as runs_cli  # `dv runs`
from dreamvideo_cli.cli._output import error_line, warn
from dreamvideo_cli.errors import DVError

app = typer.Typer(
    name="dv",
    help="Customized video generation: learn a subject and a motion, compose them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's help renderer alone costs ~0.25 s per call
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Customized video generation: learn a subject and a motion, compose them."""


learn.install(app)
compose.install(app)
eval_cli.install(app)
registry.install(app)
discovery.install(app)
doctor.install(app)
bench.install(app)
plan_cli.install(app)
gallery_cli.install(app)
runs_cli.install(app)


def _install_plugin_commands() -> None:
    from dreamvideo_cli.plugins import load_failures, pm

    for message in load_failures():
        warn(message)
    pm.hook.register_commands(cli=app)


def _is_registry_error(exc: Exception) -> bool:
    # dv_registry pulls in pydantic (~0.3 s); only look at it if something already did.
    errors = sys.modules.get("dv_registry.errors")
    return errors is not None and isinstance(exc, errors.RegistryError)


def _is_usage_error(exc: Exception) -> bool:
    """An unknown option, a missing argument: click's ClickException. Typer 0.2x vendors
    click as `typer._click`, whose exceptions are not `click`'s, so match by name."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


OUT_OF_MEMORY = (
    "the GPU ran out of memory (hint: `dv plan subject|motion|compose --backbone B ...` says what fits and "
    "which settings make it fit; --fit applies them)"
)


def _is_out_of_memory(exc: Exception) -> bool:
    """torch's OutOfMemoryError (CUDA, MPS), matched by name: the CLI does not import torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


INTERRUPTED = 130  # what shells report for a process stopped by Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dv` script: user errors are one line and a non-zero exit.

    Ctrl-C (SIGINT, even when inherited ignored) and SIGTERM are one line and exit 130
    wherever they land (a training loop catches them itself to save its state first); output files are written atomically, so
    nothing is left half-written."""
    previous: dict[int, object] = {}
    with contextlib.suppress(ValueError):  # not the main thread (an embedding program): leave signals alone
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        # A process started in the background by a shell without job control inherits SIGINT
        # ignored; `kill -INT` must still stop compose, sweeps and grids as it stops learning.
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _install_plugin_commands()
        # Typer turns a KeyboardInterrupt into Exit(130) and, outside standalone mode,
        # returns that code instead of raising it.
        code = app(args=argv, prog_name="dv", standalone_mode=False)
        if code == INTERRUPTED:
            error_line("interrupted")
            return INTERRUPTED
        if isinstance(code, int) and code:
            return code
    except DVError as exc:
        error_line(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        error_line("interrupted")
        return INTERRUPTED
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        error_line("aborted")
        return 1
    except Exception as exc:
        if _is_registry_error(exc):
            error_line(str(exc))
            return int(getattr(exc, "exit_code", 1))
        if _is_usage_error(exc):
            from dreamvideo_cli.cli._help import usage_error_line

            error_line(usage_error_line(exc))
            return int(exc.exit_code)  # type: ignore[attr-defined]
        if _is_out_of_memory(exc):
            error_line(OUT_OF_MEMORY)
            return 1
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
    return 0


def run() -> None:
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # distributed.launched(), read without importing torch
        from dreamvideo_cli.distributed import end_process

        end_process(code)
    sys.exit(code)
