"""Engine events rendered on a terminal and off one."""

from __future__ import annotations

import io

from rich.console import Console

from dreamvideo_cli.cli._progress import ProgressRenderer
from dreamvideo_cli.events import CheckpointSaved, Note, StageFinished, StageStarted, StepDone


def _events() -> list[object]:
    return [
        Note("run abc"),
        StageStarted("identity", 4, "identity adapter"),
        *[StepDone("identity", i, 4, loss=0.5 / i if i % 2 == 0 else None, lr=1e-5) for i in range(1, 5)],
        CheckpointSaved("identity", 2, "/tmp/run"),
        Note("careful", "warning"),
        StageFinished("identity"),
    ]


def test_progress_bars_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with ProgressRenderer(console=console) as progress:
        assert progress.live
        for event in _events():
            progress(event)  # type: ignore[arg-type]
    text = buffer.getvalue()
    assert "identity" in text and "4/4" in text and "loss 0.1250" in text


def test_plain_lines_off_a_terminal_and_quiet_mode(capsys: object) -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    progress = ProgressRenderer(console=console)
    assert not progress.live
    with progress:
        for event in _events():
            progress(event)  # type: ignore[arg-type]
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "identity 4/4 loss 0.1250" in err and "warning: careful" in err
    with ProgressRenderer(quiet=True, console=console) as quiet:
        for event in _events():
            quiet(event)  # type: ignore[arg-type]
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "identity 4/4" not in err and "warning: careful" in err
