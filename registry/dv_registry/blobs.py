"""A content-addressed blob store: `sha256-<hex>` files, immutable, named by their sha256.

Modelled on ollama's blob store: a blob is copied into a temporary file in the same directory,
hashed and checked while it is copied, fsynced and renamed to its name, so nobody ever sees part
of a blob and a crash leaves at most a temporary file, which `garbage` reports. The store knows
nothing of manifests or locks: which blobs are in use, and when a write is allowed, is the
caller's to say.

    blobs = BlobStore(home / "blobs")
    digest, size = blobs.put(stream, media_type=SAFETENSORS)   # ("sha256:<hex>", bytes)
    blobs.sync()                     # once, before anything durable refers to the new blobs
    blobs.path(digest)               # where a stored blob is (read-only: blobs are shared)
    blobs.check(digest, size)        # None if it re-hashes to its name, else what is wrong
    blobs.garbage(in_use)            # stored blobs not in `in_use`, and temporary leftovers
"""

from __future__ import annotations

import io
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dv_registry.errors import NotFoundError
from dv_registry.fsutil import (
    copy_hashing,
    file_size,
    fsync_dir,
    hash_file,
    is_tmp_name,
    list_dir,
    make_dirs,
    replace_durably,
    tmp_path_for,
)
from dv_registry.media import check_stream
from dv_registry.refs import check_digest

BLOB_PREFIX = "sha256-"


@dataclass(frozen=True)
class BlobFile:
    """A file in the blob directory: a stored blob (with its digest) or a temporary leftover."""

    path: Path
    size: int
    digest: str | None = None  # "sha256:<hex>"; None for a leftover of an interrupted put


@dataclass(frozen=True)
class Garbage:
    """What a blob store holds that nobody needs."""

    blobs: list[BlobFile]  # stored blobs not in use
    leftovers: list[BlobFile]  # temporary files of interrupted puts


class BlobStore:
    """Blobs in one directory. `put` may run in several processes at once (same content, same
    name, atomic renames); removing blobs is for a caller that knows nobody is about to use them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"BlobStore({str(self.directory)!r})"

    def path(self, digest: str) -> Path:
        """Where the blob `digest` ("sha256:<hex>") is; NotFoundError if it is not stored."""
        path = self._path_for(digest)
        if not path.is_file():
            raise NotFoundError(f"blob {digest} is not in the registry", hint="run `dv verify`")
        return path

    def put(self, source: IO[bytes] | bytes, *, media_type: str | None = None, what: str = "blob") -> tuple[str, int]:
        """Store the bytes of `source`; returns their (digest, size).

        With `media_type`, the content must be of that type (`what` names it in the error).
        A blob already stored is kept if it re-hashes to its name; a damaged one is replaced,
        so storing the content again heals it. The new name is durable after `sync()`.
        """
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        make_dirs(self.directory)
        # The name comes from the content, so the copy goes to a temporary file first,
        # hashed (and checked) as it streams, never held in memory.
        tmp = tmp_path_for(self.directory, "blob")
        try:
            with tmp.open("x+b") as target:
                digest, size = copy_hashing(stream, target)
                if media_type is not None:
                    check_stream(target, size, media_type, what)
            final = self._path_for(digest)
            if not (final.is_file() and hash_file(final) == (digest, size)):
                replace_durably(tmp, final, sync_dir=False)  # `sync` makes the name durable
        finally:
            tmp.unlink(missing_ok=True)  # renamed already, unless the blob was stored before or the put failed
        return digest, size

    def sync(self) -> None:
        """Make the names of the blobs put so far durable (one fsync of the directory)."""
        fsync_dir(self.directory)

    def check(self, digest: str, size: int) -> str | None:
        """None if the blob is there with this size and re-hashes to its digest, else what is wrong."""
        try:
            actual_digest, actual_size = hash_file(self._path_for(digest))
        except FileNotFoundError:
            return "its blob is missing"
        if actual_size != size:
            return f"its blob is damaged ({actual_size} bytes, expected {size})"
        if actual_digest != digest:
            return "its blob is damaged (its sha256 does not match)"
        return None

    def files(self) -> list[BlobFile]:
        """Every stored blob, in name order (leftovers of interrupted puts are not blobs)."""
        return [
            BlobFile(self.directory / name, file_size(self.directory / name), _digest_of(name))
            for name in list_dir(self.directory)
            if name.startswith(BLOB_PREFIX)
        ]

    def garbage(self, in_use: Collection[str]) -> Garbage:
        """Stored blobs whose digest is not in `in_use`, and leftovers of interrupted puts."""
        blobs: list[BlobFile] = []
        leftovers: list[BlobFile] = []
        for name in list_dir(self.directory):
            path = self.directory / name
            if is_tmp_name(name):
                leftovers.append(BlobFile(path, file_size(path)))
            elif name.startswith(BLOB_PREFIX) and _digest_of(name) not in in_use:
                blobs.append(BlobFile(path, file_size(path), _digest_of(name)))
        return Garbage(blobs, leftovers)

    def _path_for(self, digest: str) -> Path:
        return self.directory / f"{BLOB_PREFIX}{check_digest(digest)}"


def _digest_of(name: str) -> str:
    return "sha256:" + name.removeprefix(BLOB_PREFIX)
