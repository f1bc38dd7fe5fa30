"""Durable file operations: every visible change is one rename of a fully written, fsynced file.

Temporary files live in the directory of their destination (so the rename is atomic) and
carry TMP_PREFIX, which is how `prune` recognises the leftovers of an interrupted write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = ".tmp-"
CHUNK = 1024 * 1024


def is_tmp_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX)


def tmp_path_for(directory: Path, label: str) -> Path:
    return directory / f"{TMP_PREFIX}{label}-{os.getpid()}-{secrets.token_hex(6)}"


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable (a no-op where directories cannot be opened)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """mkdir -p, fsyncing each parent whose entry list changed."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old file or the new one."""
    tmp = tmp_path_for(path.parent, path.name)
    try:
        with tmp.open("xb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace_durably(tmp: Path, path: Path, *, sync_dir: bool = True) -> None:
    """Rename the fully written file `tmp` onto `path`, fsyncing it first and the directory
    after, so that a crash leaves either the old file or the new one.

    With `sync_dir=False` the new name is durable only once the caller fsyncs the directory:
    for a batch of renames into one directory, one fsync for all (`BlobStore.sync`)."""
    with tmp.open("rb") as stream:
        os.fsync(stream.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, for a writer that opens the file itself (an image or
    video encoder given a file name). Nothing exists there until the writer creates it, so
    the file gets the usual umask-based mode. When the block ends without error the file
    replaces `path` (see `replace_durably`); when it raises, the file is removed. `path`'s
    folder must exist."""
    tmp = tmp_path_for(path.parent, path.name)
    try:
        yield tmp
        replace_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_hashing(source: IO[bytes], target: IO[bytes]) -> tuple[str, int]:
    """Copy `source` into `target`; returns (`sha256:<hex>`, size) of what was copied."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def remove_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def walk_files(root: Path) -> Iterator[Path]:
    """Every regular file under `root` (symlinks are not followed)."""
    if not root.is_dir():
        return
    for directory, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            yield Path(directory) / filename


def list_dir(directory: Path) -> list[str]:
    """The sorted entries of `directory`; [] if it does not exist (or is not a directory)."""
    try:
        return sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []


def file_size(path: Path) -> int:
    """Size of `path` itself (links are not followed); 0 if it has gone."""
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None if it is missing, unreadable or not an object (a file
    another process is writing atomically is either whole or absent)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
