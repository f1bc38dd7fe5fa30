"""A learning run on disk, named once for the trainer that writes it and `dv runs` that reads
it (without torch): where run folders live, the resumable state's file, and the stages a run
goes through (what `state.json`, `loss.csv` and the progress events call them, their order,
and the config field that sets each one's length)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from dreamvideo_cli.errors import DVError

STATE_JSON = "state.json"  # in a run's checkpoints/: where the resumable state stands


def runs_folder(home: Path) -> Path:
    """`$DV_HOME/runs`, one folder per learning run."""
    return home / "runs"


class Stage(StrEnum):
    ENCODING = "encoding"  # motion: clips to latents and appearance embeddings, once
    EMBEDDING = "embedding"  # subject step 1: textual inversion
    IDENTITY = "identity"  # subject step 2: the identity adapter
    MOTION = "motion"  # the motion adapter
    DONE = "done"  # every stage finished (a subject's state after its last step)


# The training stages of each kind of run, in order.
STAGES: dict[str, tuple[Stage, ...]] = {
    "subject": (Stage.EMBEDDING, Stage.IDENTITY),
    "motion": (Stage.MOTION,),
}

# The config field that sets each training stage's number of steps.
STEPS_FIELD: dict[Stage, str] = {
    Stage.EMBEDDING: "embedding_steps",
    Stage.IDENTITY: "adapter_steps",
    Stage.MOTION: "steps",
}


# Config fields whose option is not the field's name in dashes: the CLI names a stage's
# steps and learning rate after the stage (run configs keep the older field names).
_FLAGS = {
    "steps": "--adapter-steps",
    "lr": "--adapter-lr",
    "lr_embedding": "--embedding-lr",
    "lr_adapter": "--adapter-lr",
}


def flag_of(field: str) -> str:
    """The command-line option that sets a learning config's field."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def check_step_counts(**counts: int | None) -> None:
    """Refuse, in one line and before anything loads, a step count or batch that would learn
    nothing (`--adapter-steps 0`, `--batch-size 0`): a run must never publish what it did not learn."""
    for field, value in counts.items():
        if value is not None and value < 1:
            flag = "--" + field.replace("_", "-")
            raise DVError(f"{flag} must be at least 1, got {value}", f"leave {flag} out for the default")


def check_subject_steps(embedding_steps: int, adapter_steps: int) -> None:
    """A subject's two stages may each be skipped (the paper's ablations: without textual
    inversion, without the identity adapter), but not both, and neither count may be negative."""
    for flag, value in (("--embedding-steps", embedding_steps), ("--adapter-steps", adapter_steps)):
        if value < 0:
            raise DVError(f"{flag} must be at least 0, got {value}", f"leave {flag} out for the default")
    if embedding_steps == adapter_steps == 0:
        raise DVError(
            "--embedding-steps 0 and --adapter-steps 0 would learn nothing", "leave them out for the defaults"
        )


def stage_of_steps_field(field: str) -> Stage | None:
    """The stage whose length the config field `field` sets, if any."""
    return next((stage for stage, name in STEPS_FIELD.items() if name == field), None)
