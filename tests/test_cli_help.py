"""Help that helps (issue 31, item 11): usage lines a user can copy, described options in
named groups, examples, and every usage mistake as dv's one line with what to do."""

from __future__ import annotations

import pytest

from dreamvideo_cli.cli import main


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    assert main([*command, "--help"]) == 0
    return capsys.readouterr().out


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_compose_help_reads_as_a_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "compose")
    assert "Usage: dv compose [OPTIONS] SUBJECT MOTION [PROMPT]" in text
    assert "{subject}" not in text.split("\n\n")[0]  # the braces of substitution are not a usage
    assert "list[" not in text and "<str>" not in text
    assert "--negative-prompt" in text and "What the video should not show" in text
    for group in ("Output:", "Sampling:", "Adapters:", "Sweeps:", "Device and memory:", "Examples:"):
        assert group in text, group
    examples = text.split("Examples:")[1]
    assert 'dv compose dog bear-walk "in the snow"' in examples
    assert "--subject-scale 0.5,1" in examples


def test_no_help_shows_typer_braces_or_python_types(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command's usage line is one a user can type, and its options say what they take
    in words (`NAME`, `PATH`), never as `<list[str]>`."""
    from tests.test_cli_conventions import _commands

    for path, _command in _commands():
        words = path.split()[1:]
        if words[-1] == "score-videos":
            words = words[:-1]  # `dv eval VIDEO...` runs a hidden subcommand
        text = _help(capsys, *words)
        usage = text.splitlines()[0]
        assert usage.startswith("Usage: dv") and "{" not in usage, (path, usage)
        assert "list[" not in text, path


def test_every_command_option_is_described(capsys: pytest.CaptureFixture[str]) -> None:
    """No option of compose or the learn commands is listed without a word about it."""
    import inspect

    from dreamvideo_cli.cli.compose import compose
    from dreamvideo_cli.cli.learn import motion_learn, subject_learn

    for command in (compose, subject_learn, motion_learn):
        for name, parameter in inspect.signature(command).parameters.items():
            assert getattr(parameter.default, "help", None), f"{command.__name__} {name}"


def test_learn_help_shows_what_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "subject", "learn")
    assert "Usage: dv subject learn [OPTIONS] PHOTOS" in text and "[PHOTOS]" not in text
    assert "--name" in text and "Required (not with --resume)" in text
    assert "Examples:" in text and "dv subject learn ./dog_photos --name dog" in text
    text = _help(capsys, "motion", "learn")
    assert "Usage: dv motion learn [OPTIONS] CLIPS" in text and "[CLIPS]" not in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["compose", "dog", "walk", "in", "the", "snow"], 'quote the prompt: dv compose SUBJECT MOTION "in the snow"'),
        (["motion", "learn", "x", "--name", "y", "--adapter-lr", "abc"], "'--adapter-lr'"),
        (["motion", "learn", "x", "--name", "y", "--adapter-lr", "abc"], "e.g. --adapter-lr 1e-05"),
        (["subject", "learn", "x", "--name", "y", "--steps", "2"], "--embedding-steps or --adapter-steps"),
        (["motion", "learn", "x", "--name", "y", "--lr", "1e-4"], "--adapter-lr"),
        (["compose", "a", "b", "--no-such-option"], "dv compose --help"),
        (["compose"], "usage: dv compose [OPTIONS] SUBJECT MOTION [PROMPT]"),
        (["nosuchcommand"], "dv --help"),
        (["eval", "grid", "dog"], "usage: dv eval grid [OPTIONS] SUBJECTS MOTIONS"),
    ],
)
def test_a_usage_mistake_is_one_line_that_says_what_to_do(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    line = _one_error_line(err)
    assert expected in line and "Traceback" not in err and "Usage:" not in err
