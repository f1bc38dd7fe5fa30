"""Checking what a user asked to compose before anything heavy is imported: a typo in a
name or `- -` is one line at once, not after seconds of loading torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dreamvideo_cli.errors import DVError

if TYPE_CHECKING:
    from dv_registry import Manifest, Registry

VIDEO_SUFFIXES = (".mp4", ".gif")


def resolve_one(registry: Registry, ref: str, kind: str) -> Manifest | None:
    """The manifest `ref` names, which must be a `kind`; None for `-` (left out)."""
    if ref in ("-", ""):
        return None
    manifest = registry.resolve(ref)
    if manifest.kind != kind:
        raise DVError(
            f"{ref!r} is a {manifest.kind}, not a {kind}",
            "compose takes SUBJECT MOTION PROMPT; use - to leave one out",
        )
    return manifest


def resolve_pair(registry: Registry, subject_ref: str, motion_ref: str) -> tuple[Manifest | None, Manifest | None]:
    subject = resolve_one(registry, subject_ref, "subject")
    motion = resolve_one(registry, motion_ref, "motion")
    if subject is None and motion is None:
        raise DVError("compose needs a subject, a motion, or both", "pass - for at most one of them")
    return subject, motion


def check_output(output: str | Path) -> Path:
    output = Path(output)
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise DVError(f"cannot write {output.name}: the output must end in .mp4 or .gif", "use -o out.mp4")
    return output


def check_counts(steps: int | None, frames: int | None) -> None:
    """`--sample-steps 0` and `--frames 0` are mistakes, not requests for the defaults."""
    if steps is not None and steps < 1:
        raise DVError(f"--sample-steps must be at least 1, got {steps}", "leave it out for the backbone's default")
    if frames is not None and frames < 1:
        raise DVError(f"--frames must be at least 1, got {frames}", "leave it out for the backbone's default")
