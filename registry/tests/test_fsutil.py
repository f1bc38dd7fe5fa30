"""fsutil's atomic writes for writers that need a file name: the new file or the old one,
never a half-written one, and no temporaries left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dv_registry import fsutil


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_replaces_the_file_when_the_writer_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "sheet.png"
    target.write_bytes(b"old")
    umask = os.umask(0o022)
    try:
        with fsutil.atomic_path(target) as tmp:
            # Beside the target, named as the registry's temporaries are, and not yet created,
            # so that the writer creates it (with the umask's mode) as it would the target.
            assert tmp.parent == tmp_path and fsutil.is_tmp_name(tmp.name) and not tmp.exists()
            tmp.write_bytes(b"new")
            assert target.read_bytes() == b"old"
    finally:
        os.umask(umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert _names(tmp_path) == ["sheet.png"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "video.mp4"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"), fsutil.atomic_path(target) as tmp:
        tmp.write_bytes(b"half a video")
        raise OSError("disk full")
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["video.mp4"]
    # A writer that wrote nothing replaces nothing.
    with pytest.raises(FileNotFoundError), fsutil.atomic_path(target):
        pass
    assert _names(tmp_path) == ["video.mp4"]


def test_replace_durably_moves_a_written_file_into_place(tmp_path: Path) -> None:
    tmp = fsutil.tmp_path_for(tmp_path, "out.json")
    tmp.write_text("{}")
    fsutil.replace_durably(tmp, tmp_path / "out.json")
    assert _names(tmp_path) == ["out.json"]
    assert (tmp_path / "out.json").read_text() == "{}"
