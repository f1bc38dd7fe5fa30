"""All-or-nothing changes to several manifest files at once.

A change is first written whole to `$DV_HOME/journal.json` (atomically), then applied file
by file, then the journal is removed. A crash before the journal exists leaves the old state;
a crash after leaves a journal that the next process to take the lock replays (replaying is
idempotent), so everyone who reads through the lock sees the old state or the new one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from dv_registry.errors import RegistryError
from dv_registry.fsutil import atomic_write_bytes, fsync_dir, make_dirs, remove_file, tmp_path_for

JOURNAL_NAME = "journal.json"
JOURNAL_VERSION = 1


@dataclass(frozen=True)
class Op:
    action: Literal["write", "delete"]
    path: str  # relative to $DV_HOME, always under manifests/
    data: bytes | None = None


def journal_path(home: Path) -> Path:
    return home / JOURNAL_NAME


def pending(home: Path) -> bool:
    return journal_path(home).exists()


def commit(home: Path, ops: list[Op]) -> None:
    """Apply `ops` as one change. The caller holds the exclusive lock."""
    if not ops:
        return
    for op in ops:
        _check_path(op.path)
    document = {
        "journal": JOURNAL_VERSION,
        "ops": [
            {"action": op.action, "path": op.path} | ({"data": op.data.decode("utf-8")} if op.data is not None else {})
            for op in ops
        ],
    }
    atomic_write_bytes(journal_path(home), json.dumps(document).encode("utf-8"))
    _apply(home, ops)
    remove_file(journal_path(home))


def recover(home: Path) -> bool:
    """Finish a change a crashed writer left half-applied. The caller holds the exclusive lock."""
    path = journal_path(home)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False
    try:
        document = json.loads(raw.decode("utf-8"))
        if document.get("journal") != JOURNAL_VERSION:
            raise ValueError(f"unknown journal version {document.get('journal')!r}")
        ops = [
            Op(
                action=item["action"],
                path=_check_path(item["path"]),
                data=item["data"].encode("utf-8") if "data" in item else None,
            )
            for item in document["ops"]
        ]
        if any(op.action not in ("write", "delete") for op in ops):
            raise ValueError("unknown journal action")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RegistryError(
            f"{path} is damaged ({exc}); the last change to the registry cannot be finished",
            hint="move it away, then run `dv verify`",
        ) from None
    _apply(home, ops)
    remove_file(path)
    return True


def _apply(home: Path, ops: list[Op]) -> None:
    # Batched: every new file is written and fsynced first, then all are renamed into place,
    # then each directory is fsynced once. The journal makes the batch all-or-nothing.
    staged: list[tuple[Path, Path]] = []
    try:
        for op in ops:
            if op.action != "write":
                continue
            assert op.data is not None
            target = home / op.path
            make_dirs(target.parent)
            tmp = tmp_path_for(target.parent, target.name)
            staged.append((tmp, target))
            with tmp.open("xb") as stream:
                stream.write(op.data)
                stream.flush()
                os.fsync(stream.fileno())
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _target in staged:
            tmp.unlink(missing_ok=True)
        raise
    written_dirs = {target.parent for _tmp, target in staged}
    deleted_dirs: set[Path] = set()
    for op in ops:
        if op.action == "delete":
            target = home / op.path
            target.unlink(missing_ok=True)
            deleted_dirs.add(target.parent)
    for directory in sorted(written_dirs | deleted_dirs):
        if directory.is_dir():  # on a replay an earlier run may have removed it already
            fsync_dir(directory)
    for directory in sorted(deleted_dirs - written_dirs):
        # A name with no tags left is gone: drop its directory so the name is free again.
        try:
            directory.rmdir()
        except OSError:
            continue
        fsync_dir(directory.parent)


def _check_path(path: str) -> str:
    parts = PurePosixPath(path).parts
    if len(parts) != 4 or parts[0] != "manifests" or ".." in parts or not path.endswith(".json"):
        raise ValueError(f"journal path {path!r} is outside the manifests")
    return path
