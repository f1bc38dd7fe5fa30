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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_piped_lines_give_the_rate_and_the_time_left(capsys: object) -> None:
    """Off a terminal (a pipe, a log file) a stage without losses still says how far it is,
    how fast it goes and how long it has left, at least every `every` seconds."""
    clock = _Clock()
    console = Console(file=io.StringIO(), force_terminal=False)
    with ProgressRenderer(console=console, clock=clock, every=5.0) as progress:
        progress(StageStarted("sampling", 20, "ddim, guidance 9"))
        for step in range(1, 21):
            clock.now += 0.5  # 2 steps a second
            progress(StepDone("sampling", step, 20))
    lines = capsys.readouterr().err.splitlines()  # type: ignore[attr-defined]
    assert lines[0] == "sampling: ddim, guidance 9 (20 steps)"
    steps = [line for line in lines if line.startswith("sampling ")]
    assert steps == [
        "sampling 1/20, 2.00 it/s, 0:00 elapsed, eta 0:10",
        "sampling 11/20, 2.00 it/s, 0:06 elapsed, eta 0:04",  # 5 s after the last line
        "sampling 20/20, 2.00 it/s, 0:10 elapsed",
    ]


def test_a_slow_stage_gives_seconds_per_step_and_a_resumed_one_counts_from_where_it_was(capsys: object) -> None:
    clock = _Clock()
    console = Console(file=io.StringIO(), force_terminal=False)
    with ProgressRenderer(console=console, clock=clock) as progress:
        progress(StageStarted("motion", 1000, "motion adapter"))
        for step in (501, 502):
            clock.now += 4.0
            progress(StepDone("motion", step, 1000, loss=0.25))
    lines = capsys.readouterr().err.splitlines()  # type: ignore[attr-defined]
    assert lines[-1] == "motion 502/1000 loss 0.2500, 4.00 s/it, 0:08 elapsed, eta 33:12"


def test_stages_count_what_they_count(capsys: object) -> None:
    """A grid counts cells, a decode is one pass (no count), and one is singular."""
    console = Console(file=io.StringIO(), force_terminal=False)
    with ProgressRenderer(console=console) as progress:
        progress(StageStarted("grid", 4, "composing and scoring", unit="cell"))
        progress(StageStarted("decoding", 1, "VAE decode", unit=""))
        progress(StageStarted("sampling", 1, "ddim, guidance 9"))
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "grid: composing and scoring (4 cells)" in err
    assert "decoding: VAE decode\n" in err and "(1 step)" not in err.split("decoding")[1].split("\n")[0]
    assert "sampling: ddim, guidance 9 (1 step)" in err and "1 steps" not in err
