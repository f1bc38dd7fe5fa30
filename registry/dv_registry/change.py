"""How the registry changes: under its lock, blobs first, then every manifest in one commit.

    with writing(home, lock, blobs) as change:   # the exclusive lock; a crashed change is finished
        digest, size = change.put_blob(stream, media_type=SAFETENSORS)
        change.write("manifests/subject/dog/v1.json", data)
        change.delete("manifests/subject/dog/step500.json")
    # leaving the block: the blob directory is fsynced, then the manifest writes and deletes are
    # applied through the journal, all or nothing. An exception in the block commits nothing.

    with reading(home, lock, blobs):             # the shared lock: nobody changes anything
        ...

A crash at any instant leaves the old state or the new one: blobs are immutable and named by
their content, so a blob put by a change that never committed is only garbage for `prune`, and
the journal makes the manifest writes one step (see journal.py). Nothing is renamed into the
manifests before the blobs they reference are durable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dv_registry import journal
from dv_registry.blobs import BlobStore
from dv_registry.errors import RegistryError
from dv_registry.fsutil import make_dirs
from dv_registry.lock import RegistryLock

HOME_ENV = "DV_HOME"


class Change:
    """One change being made. Blobs are stored at once; manifest writes and deletes wait for
    the commit that `writing` makes when its block ends."""

    def __init__(self, home: Path, blobs: BlobStore) -> None:
        self.home = home
        self.blobs = blobs
        self._ops: list[journal.Op] = []
        self._put_blobs = False

    def put_blob(
        self, source: IO[bytes] | bytes, *, media_type: str | None = None, what: str = "blob"
    ) -> tuple[str, int]:
        """Store a blob (see `BlobStore.put`); it is made durable before the commit."""
        self._put_blobs = True
        return self.blobs.put(source, media_type=media_type, what=what)

    def write(self, relpath: str, data: bytes) -> None:
        """Write `data` to `relpath` (under manifests/) when the change commits."""
        self._ops.append(journal.Op("write", relpath, data))

    def delete(self, relpath: str) -> None:
        """Remove `relpath` (under manifests/) when the change commits."""
        self._ops.append(journal.Op("delete", relpath))

    def commit(self) -> None:
        """Make the blobs durable, then apply the manifest changes as one journaled step."""
        if self._put_blobs:
            self.blobs.sync()
            self._put_blobs = False
        ops, self._ops = self._ops, []
        journal.commit(self.home, ops)


@contextlib.contextmanager
def writing(home: Path, lock: RegistryLock, blobs: BlobStore) -> Iterator[Change]:
    """Hold the exclusive lock, finish a crashed change, yield a Change and commit it.

    OS errors (a full disk, permissions) become a RegistryError: they are the user's to fix,
    and the journal and the write order leave the registry as it was or completed.
    """
    try:
        make_dirs(blobs.directory)
        make_dirs(home / "manifests")
        lock.acquire("exclusive")
    except OSError as exc:
        raise RegistryError(
            f"cannot write to the registry at {home}: {exc.strerror or exc}",
            hint=f"check its permissions, or set {HOME_ENV} to a writable directory",
        ) from exc
    try:
        journal.recover(home)
        change = Change(home, blobs)
        yield change
        change.commit()
    except OSError as exc:
        raise RegistryError(f"cannot write to the registry at {home}: {exc}") from exc
    finally:
        lock.release()


@contextlib.contextmanager
def reading(home: Path, lock: RegistryLock, blobs: BlobStore) -> Iterator[None]:
    """Hold the shared lock, after finishing a change a crashed writer left behind."""
    if not home.is_dir():
        # Nothing to read and nothing to lock; reading must not create the home.
        yield
        return
    if lock.depth == 0:
        # A journal with no writer holding the lock is a crashed change: finish it first.
        while True:
            if journal.pending(home):
                with writing(home, lock, blobs):
                    pass
            lock.acquire("shared")
            if not journal.pending(home):
                break
            lock.release()
    else:
        lock.acquire("shared")
    try:
        yield
    finally:
        lock.release()
