"""Clips and their captions: listing a motion folder, probing and reading clips (through
`decoders`: decord, PyAV as the fallback), and the captions that go with them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.media._files import UInt8Array, check_folder, visible_files
from dreamvideo_cli.media.decoders import ClipInfo, open_clip

# .gif is a clip, not a photo: a subject folder holding an animated GIF is more
# likely a mistake than a still, and a motion folder of GIFs is a real use.
VIDEO_SUFFIXES: frozenset[str] = frozenset(
    {
        ".mp4",
        ".avi",
        ".mov",
        ".webm",
        ".mkv",
        ".m4v",
        ".gif",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".3gp",
    }
)
CAPTIONS_FILE = "captions.txt"


def probe_clip(path: str | os.PathLike[str]) -> ClipInfo:
    """Frames, fps and display size of a clip (decoding only its first frame)."""
    with open_clip(path) as reader:
        return reader.info


def list_clips(folder: str | os.PathLike[str]) -> list[Path]:
    """The video clips directly in a folder, in natural order."""
    folder = Path(folder)
    hint = "pass the folder that holds the motion's clips"
    check_folder(folder, "clip", hint)
    clips = visible_files(folder, VIDEO_SUFFIXES)
    if not clips:
        kinds = ", ".join(sorted(s.lstrip(".") for s in VIDEO_SUFFIXES))
        raise DVError(f"no clips in {folder}", f"add one or more short clips ({kinds})")
    return clips


def read_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | None,
    height: int | None = None,
    width: int | None = None,
) -> UInt8Array:
    """Frames at `indices` (None = all) as uint8 [F, H, W, 3], resized+centre-cropped if a size is given.

    Only the frames asked for are decoded (decord seeks to each one's keyframe); indices
    past the end loop round, as `sample_frame_indices` does for a short clip."""
    if (height is None) != (width is None):
        raise ValueError("give both height and width, or neither")
    with open_clip(path) as reader:
        return reader.read(indices, height, width)


def read_captions(folder: str | os.PathLike[str], clips: Sequence[str | os.PathLike[str]]) -> dict[Path, str | None]:
    """Caption per clip from `captions.txt` (`name: caption` or `name<TAB>caption`), else `<stem>.txt`."""
    table = _caption_table(Path(folder))
    captions: dict[Path, str | None] = {}
    for clip in map(Path, clips):
        caption: str | None = table.get(clip.name.lower(), table.get(clip.stem.lower()))
        if caption is None:
            sidecar = clip.with_suffix(".txt")
            if sidecar.is_file() and sidecar.name != CAPTIONS_FILE:
                caption = " ".join(sidecar.read_text(encoding="utf-8-sig", errors="replace").split())
        captions[clip] = caption or None
    return captions


def unmatched_captions(folder: str | os.PathLike[str], clips: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The names `captions.txt` gives that are none of `clips` (by file name or stem): a typo
    that would leave a clip captioned with the motion's phrase instead."""
    names = {n for clip in map(Path, clips) for n in (clip.name.lower(), clip.stem.lower())}
    return [name for name in _caption_table(Path(folder)) if name not in names]


def _caption_table(folder: Path) -> dict[str, str]:
    """`captions.txt` as lower-case name -> caption (empty if there is no such file)."""
    table: dict[str, str] = {}
    listing = folder / CAPTIONS_FILE
    if listing.is_file():
        text = listing.read_text(encoding="utf-8-sig", errors="replace")
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, body = line.partition("\t") if "\t" in line else line.partition(":")
            if not sep or not name.strip():
                raise DVError(
                    f"{listing}:{number}: expected `filename: caption`, got {line!r}",
                    "write one `clip.mp4: a caption` per line",
                )
            table[name.strip().lower()] = body.strip()
    return table
