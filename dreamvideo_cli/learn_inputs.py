"""What a learn command names, checked before torch loads (a mistake costs a second, not the
9-15 s of importing the engine): the name, the backbone, the folder and data that can teach
(photos large enough and 3-5 of them, clips that move, captions that name real clips, a
phrase prompts can read), and one name staying on one backbone.

The checks raise a `DVError` for what cannot teach and return warnings (one line each) for
what can but probably not as the user means."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.media import IMAGE_SUFFIXES, list_clips, probe_clip
from dreamvideo_cli.media._files import check_folder, visible_files
from dreamvideo_cli.media.clips import CAPTIONS_FILE, unmatched_captions
from dreamvideo_cli.plugins import get_backbone

if TYPE_CHECKING:
    from dv_registry import Manifest, Registry


def backbone_key(manifest: Manifest) -> tuple[str, bool]:
    """The backbone an entry was learnt on, as far as telling backbones apart without loading
    them goes: its registered name and whether its weights were random."""
    fingerprint: dict[str, Any] = manifest.backbone
    return str(fingerprint.get("backbone")), bool(fingerprint.get("random_weights", False))


def describe_key(key: tuple[str, bool]) -> str:
    return f"{key[0]} (random weights)" if key[1] else key[0]


def versions_on(registry: Registry, name: str, key: tuple[str, bool]) -> list[str]:
    """The `vN` references of `name` learnt on the backbone `key`, newest first."""
    from dv_registry.refs import is_version_tag

    found = []
    for tag in registry.tags(name):
        if is_version_tag(tag):
            manifest = registry.resolve(f"{name}:{tag}")
            if backbone_key(manifest) == key:
                found.append(manifest.ref)
    return sorted(found, key=lambda ref: int(ref.rpartition(":v")[2]), reverse=True)


def check_kind_of_name(existing: Manifest, kind: str) -> None:
    """A name is a subject or a motion, never both."""
    if existing.kind != kind:
        raise DVError(
            f"{existing.name!r} is already a {existing.kind} in the registry; a name is a subject or a motion, never both",
            f"choose another name or remove it with `dv rm {existing.name}`",
        )


def check_backbone_of_name(
    registry: Registry, kind: str, name: str, backbone: str, random_weights: bool, *, force: bool
) -> str | None:
    """Refuse to learn `name` on another backbone than its `latest` (that would move `latest`
    where composes with the name's other adapters no longer work), unless `force`; with
    `force`, the warning to show. None when the name is new or stays on its backbone."""
    from dv_registry import NotFoundError
    from dv_registry.refs import check_name

    check_name(name)
    try:
        latest = registry.resolve(name)
    except NotFoundError:
        return None
    check_kind_of_name(latest, kind)
    was, now = backbone_key(latest), (backbone, random_weights)
    if was == now:
        return None
    if not force:
        raise DVError(
            f"{name} is learnt on {describe_key(was)}; learning it on {describe_key(now)} would move {name}:latest "
            "to another backbone",
            f"choose another name, e.g. {name}-{backbone}, or pass --force to move {name}:latest",
        )
    return f"{name}:latest moves from {describe_key(was)} to {describe_key(now)}; its earlier versions stay on {describe_key(was)}"


PHOTOS_EXPECTED = (3, 5)  # the paper's 3-5 photos of a subject


def name_words(name: str) -> str:
    """How prompts read a subject's or motion's name when no word is given for it: its dashes
    and underscores as spaces ("bear-walk" -> "bear walk")."""
    return name.replace("-", " ").replace("_", " ")


MOST_ELONGATED = 3.0  # a photo longer than 3:1 loses most of itself to the centre crop


def check_subject_data(folder: Path, name: str, backbone: str, masks: Path | None) -> list[str]:
    """The name, the backbone and the photos (their count and size, read from their headers);
    returns warnings."""
    from PIL import Image

    from dv_registry.refs import check_name

    check_name(name)
    video = get_backbone(backbone).video_format
    check_folder(folder, "photo", "pass the folder that holds 3-5 photos of the subject")
    if masks is not None:
        check_folder(masks, "mask", "pass the folder that holds the subject masks, named like the photos")
    photos = visible_files(folder, IMAGE_SUFFIXES)
    if not photos:
        return []  # learning says what a photo folder should hold
    warnings = []
    low, high = PHOTOS_EXPECTED
    if len(photos) < low:
        warnings.append(
            f"{len(photos)} photo{'s' if len(photos) > 1 else ''} in {folder}: the method expects {low}-{high} "
            "(views of the subject from a few angles); a subject learnt from fewer copies them more than it learns them"
        )
    least = max(8, min(video.height, video.width) // 4)
    for path in photos:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:  # unreadable here: learning skips it and says why
            continue
        if min(width, height) < least:
            raise DVError(
                f"photo {path.name} is {width}x{height} pixels, too small to teach {backbone} "
                f"(which learns at {video.width}x{video.height})",
                f"use photos at least {least} pixels on their short side, or remove it",
            )
        if max(width, height) / min(width, height) > MOST_ELONGATED:
            warnings.append(
                f"photo {path.name} is {width}x{height}: the square centre crop keeps "
                f"{min(width, height) / max(width, height):.0%} of it"
            )
    return warnings


def check_motion_data(folder: Path, name: str, backbone: str, phrase: str | None) -> list[str]:
    """The name, the backbone, the clips (each must move: two frames or more) and their
    captions, and the phrase prompts will use; returns warnings."""
    from dv_registry.refs import check_name

    check_name(name)
    get_backbone(backbone)
    clips = list_clips(folder)
    for clip in clips:
        info = probe_clip(clip)
        if info.frames < 2:
            raise DVError(
                f"clip {clip.name} has {info.frames} frame{'s' if info.frames != 1 else ''}: a still cannot teach a motion",
                "remove it, or use a clip of 2 or more frames",
            )
    warnings = []
    unknown = unmatched_captions(folder, clips)
    if unknown:
        uncaptioned = "their clips" if len(unknown) > 1 else "its clip"
        warnings.append(
            f"{CAPTIONS_FILE} names {', '.join(unknown)}, not a clip in {folder}; "
            f"{uncaptioned} will be captioned with the motion's phrase"
        )
    if phrase is None:
        words = name_words(name)
        if not any(word.endswith("ing") for word in words.split()):
            warnings.append(
                f'no --phrase: prompts will name the motion "{words}" (a dog {words} in the snow); '
                'say how prompts name it, e.g. --phrase "walking"'
            )
    return warnings
