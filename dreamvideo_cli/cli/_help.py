"""Help that helps, in plain text (rich's help renderer costs ~0.25 s per call): options in
named groups (typer's `rich_help_panel`), examples printed as written, and a usage mistake
(an unknown option, a bad value, an unquoted prompt) as one line that says what to do."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

# Options without a group of their own are listed under this heading, last.
OTHER = "Other options"


class GroupedCommand(TyperCommand):
    """A command whose help lists its options by group and ends with examples."""

    examples: tuple[str, ...] = ()

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """`[OPTIONS] SUBJECT MOTION [PROMPT]`: an argument's metavar as written (typer would
        wrap a required one in braces), else its name in capitals, in brackets if optional."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = param.metavar or (param.name or "").upper()
            if param.metavar is None and param.nargs != 1:
                name += "..."
            pieces.append(name if param.metavar is not None or param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                name = param.metavar or (param.name or "").upper()
                arguments.append((name.strip("[]."), record[1]))
            else:
                groups.setdefault(getattr(param, "rich_help_panel", None) or OTHER, []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        for title in sorted(groups, key=lambda t: t == OTHER):  # stable: the groups in order, then the rest
            with formatter.section("Options" if len(groups) == 1 else title):
                formatter.write_dl(groups[title])

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        if not self.examples:
            return
        with formatter.section("Examples"):
            for line in self.examples:  # as written: click would rewrap them into one paragraph
                formatter.write(" " * formatter.current_indent + line + "\n")


def with_examples(*examples: str) -> type[GroupedCommand]:
    """A GroupedCommand class whose help ends with these example command lines."""
    return type("GroupedCommandWithExamples", (GroupedCommand,), {"examples": tuple(examples)})


def usage_error_line(exc: Any) -> str:
    """Click's usage error (its message, then a usage block and a `--help` line) as dv's
    one line: what was wrong and what to do."""
    message = " ".join(exc.format_message().split())
    ctx: Any = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "dv"
    command = ctx.command if ctx is not None else None
    if command is not None and command.hidden and ctx.parent is not None:
        path = ctx.parent.command_path  # `dv eval VIDEO...` runs a hidden subcommand: say what the user typed
    if "unexpected extra argument" in message and path.endswith("compose"):
        return f'{message} (quote the prompt: {path} SUBJECT MOTION "in the snow")'
    if message.startswith("No such command"):
        return f"{message} (`{path} --help` lists the commands)"
    if command is not None and type(exc).__name__ == "MissingParameter":
        return f"{message} (usage: {path} {' '.join(command.collect_usage_pieces(ctx))})"
    param = getattr(exc, "param", None)
    if type(exc).__name__ == "BadParameter" and param is not None and getattr(param, "opts", None):
        flag = max(param.opts, key=len)
        example = f", e.g. {flag} {param.default}" if param.default not in (None, "", False) else ""
        return f"{message} (give {flag} a value of its kind{example}; `{path} --help` says what each takes)"
    option = getattr(exc, "option_name", None)
    if option and command is not None and type(exc).__name__ == "NoSuchOption":
        word = option.lstrip("-")
        known = [o for p in command.params for o in getattr(p, "opts", []) if o.startswith("--")]
        near = [o for o in known if o.endswith("-" + word) or o.startswith(f"--{word}")]
        if near:
            return f"No such option: {option} ({path} takes {' or '.join(near)})"
    return f"{message} (`{path} --help` lists every option and what it takes)"
