"""`--resume`: reopen a run where its saved state stands, with the config it was started with
and only the changes that do not alter what it learns."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.events import EventHandler, Note
from dreamvideo_cli.learn.run_folder import Run
from dreamvideo_cli.run_layout import STAGES, STEPS_FIELD, Stage, flag_of, stage_of_steps_field

# Settings a resumed run may change: how it runs, not what it learns.
RESUMABLE_SETTINGS = frozenset(
    {
        "device",
        "log_every",
        "save_every",
        "compile",
        "gradient_checkpointing",
        "shard",
        "blocks_to_swap",
        "offload_activations",
        "description",
        "preview_every",
        "preview_prompt",
    }
)

ConfigT = TypeVar("ConfigT")


def resumed_config(
    registry_home: Path,
    resume: str,
    kind: str,
    config_type: type[ConfigT],
    requested: ConfigT | str,
    on_event: EventHandler | None = None,
    name: str | None = None,
) -> tuple[Run, ConfigT, str, Path]:
    """Open a run to resume: its saved config, name and inputs.

    `requested` is the config the user asked for now (or just a device name). A setting
    the user changed from its default is applied if it only changes how the run goes on
    (the device, logging, checkpoints, a later end of a stage not yet passed), and said so;
    any other change (a learning rate, a batch size, the frames) is refused in one line,
    since the saved state was made with the old value."""
    run = Run.open(registry_home, resume)
    saved = run.config()
    if saved["kind"] != kind:
        raise DVError(f"run {resume!r} is a {saved['kind']} run", f"resume it with `dv {saved['kind']} learn`")
    if name and name != saved["name"]:
        raise DVError(
            f"run {run.id} learns {saved['name']!r}, not {name!r}",
            f"resume without --name, or start a new run for {name!r}",
        )
    if _finished(run.state_meta(), kind, saved["config"]):
        raise DVError(
            f"run {run.id} has finished: its result is {saved['name']!r} in the registry",
            f"see `dv show {saved['name']}`, or start a new run",
        )
    values = dict(saved["config"])
    if isinstance(requested, str):
        values["device"] = requested
        return run, config_type(**values), saved["name"], Path(saved["inputs"])
    state = run.state_meta()
    defaults = config_type()
    applied = []
    for name, value in asdict(requested).items():  # type: ignore[call-overload]
        if name not in values or value == values[name] or value == getattr(defaults, name):
            continue
        stage = stage_of_steps_field(name)
        if name in RESUMABLE_SETTINGS or (stage is not None and stage_can_lengthen(state, kind, stage, value)):
            applied.append(f"{name} {values[name]} -> {value}")
            values[name] = value
        elif stage is not None:
            raise DVError(
                f"run {run.id} is past step {value} of {stage}",
                f"resume with {flag_of(name)} above {state['step']}, or start a new run",
            )
        else:
            raise DVError(
                f"run {run.id} was started with {name} = {values[name]!r}, and a resumed run keeps what it learns with",
                f"resume without {flag_of(name)}, or start a new run",
            )
    values["device"] = requested.device  # type: ignore[attr-defined]
    if applied and on_event is not None:
        on_event(Note(f"resuming with {', '.join(applied)}"))
    return run, config_type(**values), saved["name"], Path(saved["inputs"])


def _finished(state: dict[str, Any], kind: str, config: dict[str, Any]) -> bool:
    """Whether the saved state is a run's end (a motion run of an earlier release saved its
    last stage at its last step rather than `done`)."""
    last = STAGES[kind][-1]
    total = config.get(STEPS_FIELD[last])
    return state["stage"] == Stage.DONE or (
        state["stage"] == last and isinstance(total, int) and state["step"] >= total
    )


def stage_can_lengthen(state: dict[str, Any], kind: str, stage: Stage, total: int) -> bool:
    """Whether a stage's step total may change: while the run has not reached that stage, or
    is in it and not yet past the new total."""
    order = [*STAGES[kind], Stage.DONE]
    at = Stage(state["stage"]) if state["stage"] in order else order[-1]
    if order.index(at) < order.index(stage):
        return True
    return at == stage and total > int(state["step"])
