"""Helpers every media module shares: listing folders, short error reasons. (Atomic writes
are dv_registry.fsutil's: `atomic_path` and `replace_durably`.)"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dreamvideo_cli.errors import DVError

UInt8Array = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]


def natural_key(path: Path) -> tuple[Any, ...]:
    """Sort key that puts clip2 before clip10."""
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def visible_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Non-hidden regular files directly in `folder` whose suffix is listed."""
    wanted = set(suffixes)
    try:
        files = [
            p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in wanted and p.is_file()
        ]
    except OSError as exc:
        raise DVError(f"cannot list {folder}: {reason(exc)}", "check its permissions") from None
    return sorted(files, key=natural_key)


def check_folder(folder: Path, what: str, hint: str) -> None:
    """Raise a DVError when `folder` is missing or not a directory."""
    if not folder.exists():
        raise DVError(f"{what} folder {folder} does not exist", hint)
    if not folder.is_dir():
        raise DVError(f"{folder} is not a folder", hint)


def reason(exc: BaseException) -> str:
    """A short human reason from an exception (decoders raise terse ones)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
