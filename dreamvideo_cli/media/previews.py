"""Previews (a contact sheet of frames with a caption strip, saved as PNG) and the digest
that identifies a training set in a manifest."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.media._files import reason
from dreamvideo_cli.media.writing import check_frames
from dv_registry.fsutil import atomic_path


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int, max_lines: int = 3) -> list[str]:
    """Greedy word wrap to `width` pixels, ending with '...' when it runs out of lines."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += " ..."
    # A single word wider than the sheet is cut rather than overflowing it.
    for i, line in enumerate(lines):
        while len(line) > 1 and draw.textlength(line, font=font) > width:
            line = line[:-4] + "..." if len(line) > 4 else line[:-1]
        lines[i] = line
    return lines


def contact_sheet(
    frames: npt.NDArray[Any], columns: int = 8, max_frames: int = 16, label: str | None = None
) -> Image.Image:
    """A grid of up to `max_frames` evenly spaced frames, with an optional caption strip."""
    arr = check_frames(frames)
    count = min(len(arr), max(1, max_frames))
    picks = np.unique(np.round(np.linspace(0, len(arr) - 1, count)).astype(int))
    cols = max(1, min(columns, len(picks)))
    rows = math.ceil(len(picks) / cols)
    _, h, w, _ = arr.shape
    gap = 2
    sheet_w = cols * w + (cols - 1) * gap
    grid_h = rows * h + (rows - 1) * gap

    strip: Image.Image | None = None
    if label:
        font = ImageFont.load_default(size=max(10, min(18, sheet_w // 40)))
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        lines = _wrap(measure, label, font, sheet_w - 8)
        ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (11, 2)
        line_h = ascent + descent + 2
        strip = Image.new("RGB", (sheet_w, line_h * len(lines) + 8), (255, 255, 255))
        draw = ImageDraw.Draw(strip)
        for i, line in enumerate(lines):
            draw.text((4, 4 + i * line_h), line, fill=(0, 0, 0), font=font)

    extra = strip.height if strip is not None else 0
    sheet = Image.new("RGB", (sheet_w, grid_h + extra), (255, 255, 255))
    for slot, index in enumerate(picks):
        r, c = divmod(slot, cols)
        sheet.paste(Image.fromarray(arr[index], "RGB"), (c * (w + gap), r * (h + gap)))
    if strip is not None:
        sheet.paste(strip, (0, grid_h))
    return sheet


def save_png(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Save an image as PNG atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
    except OSError as exc:
        raise DVError(f"cannot write {path}: {reason(exc)}", "check the disk and the path") from None
    return path


def dataset_digest(paths: Iterable[str | os.PathLike[str]]) -> str:
    """`sha256:<hex>` over the files' names and contents, independent of order and location."""
    entries: list[tuple[str, str]] = []
    for path in map(Path, paths):
        try:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise DVError(f"cannot read {path}: {reason(exc)}", "check the data folder") from None
        entries.append((path.name, digest.hexdigest()))
    total = hashlib.sha256()
    for name, content in sorted(entries):
        # Length-prefixed so that no two different file lists hash the same bytes.
        encoded = name.encode("utf-8", errors="surrogateescape")
        total.update(f"{len(encoded)}:".encode() + encoded + b"\0" + content.encode() + b"\n")
    return f"sha256:{total.hexdigest()}"
