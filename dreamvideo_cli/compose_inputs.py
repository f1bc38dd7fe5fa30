"""Checking what a user asked to compose before anything heavy is imported: a typo in a
name or `- -` is one line at once, not after seconds of loading torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.learn_inputs import backbone_key, describe_key, versions_on
from dreamvideo_cli.run_layout import check_step_counts

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
    if subject is not None and motion is not None:
        check_same_backbone(registry, subject, motion)
    return subject, motion


def check_same_backbone(registry: Registry, subject: Manifest, motion: Manifest) -> None:
    """A subject and a motion learnt on different backbones cannot be composed: say so before
    anything loads, naming the versions of each that would work with the other."""
    s_key, m_key = backbone_key(subject), backbone_key(motion)
    if s_key == m_key:
        return
    options = [f"{ref} {motion.ref}" for ref in versions_on(registry, subject.name, m_key)[:1]]
    options += [f"{subject.ref} {ref}" for ref in versions_on(registry, motion.name, s_key)[:1]]
    raise DVError(
        f"{subject.ref} was learnt on {describe_key(s_key)} but {motion.ref} on {describe_key(m_key)}",
        " or ".join(f"`dv compose {pair} ...`" for pair in options) if options else "learn both on the same backbone",
    )


def check_output(output: str | Path) -> Path:
    output = Path(output)
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise DVError(f"cannot write {output.name}: the output must end in .mp4 or .gif", "use -o out.mp4")
    return output


def check_counts(steps: int | None, frames: int | None) -> None:
    """`--sample-steps 0` and `--frames 0` are mistakes, not requests for the defaults."""
    check_step_counts(sample_steps=steps, frames=frames)


def compose_files(output: Path, gif: bool) -> list[Path]:
    """Every file a compose to `output` writes: the video and its metadata, the contact
    sheet, and the GIF with its metadata when asked for."""
    files = [output, output.with_name(output.name + ".json"), output.with_suffix(".png")]
    if gif and output.suffix.lower() != ".gif":
        gif_path = output.with_suffix(".gif")
        files += [gif_path, gif_path.with_name(gif_path.name + ".json")]
    return files


def check_free(output: Path, gif: bool, force: bool) -> None:
    """Nothing is overwritten silently: refuse an output whose files exist, unless `force`."""
    taken = [path for path in compose_files(output, gif) if path.exists()]
    if taken and not force:
        raise DVError(f"{taken[0]} exists", "choose another -o, or pass --force to replace it")


def free_name(folder: Path, stem: str, suffix: str, gif: bool = False) -> Path:
    """`folder/stem+suffix`, or the first of `stem-2`, `stem-3`, ... that writes no existing
    file: a default output name never replaces an earlier result (a new prompt, same seed)."""
    for n in range(1, 10_000):
        candidate = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        files = compose_files(candidate, gif) if suffix else [candidate]
        if not any(path.exists() for path in files):
            return candidate
    raise DVError(f"{folder} holds 10,000 outputs named {stem}", "pass -o")
