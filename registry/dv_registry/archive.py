"""`.dvpack` files: one portable tar (plain or gzip) of manifests and the blobs they reference.

    manifest.json          {"dvpack": 1, "manifests": [{"kind", "name", "tag", "digest", "manifest"}]}
    blobs/sha256-<hex>     one member per blob

This module knows the format and nothing of the registry: `write_pack` writes manifests and
their blobs from a BlobStore; `read_pack` trusts nothing in a file: every member name and type,
every blob's sha256 and size, every manifest and every file's content against its media type
are checked in a temporary directory, and only a pack that passed every check is handed over.
The Registry then commits it under its lock, all or nothing.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from dv_registry.blobs import BlobStore
from dv_registry.errors import NewerSchemaError, NotFoundError, RegistryError
from dv_registry.fsutil import atomic_path, copy_hashing
from dv_registry.manifest import (
    Manifest,
    check_kind,
    encode_manifest,
    manifest_from_document,
    sha256_digest,
)
from dv_registry.media import check_file
from dv_registry.refs import check_name, check_tag

PACK_VERSION = 1
INDEX_NAME = "manifest.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024
_BLOB_MEMBER_RE = re.compile(r"blobs/sha256-([0-9a-f]{64})")


@dataclass(frozen=True)
class PackEntry:
    """One manifest of a pack, checked."""

    manifest: Manifest
    data: bytes  # canonical manifest bytes, as they will be stored


@dataclass(frozen=True)
class Pack:
    """A pack that passed every check; its blobs wait in a temporary directory."""

    path: Path
    entries: list[PackEntry]
    blob_dir: Path

    @property
    def digests(self) -> list[str]:
        """Every blob the manifests reference, sorted."""
        return sorted({f.digest for e in self.entries for f in e.manifest.files})

    def open_blob(self, digest: str) -> IO[bytes]:
        return (self.blob_dir / digest.removeprefix("sha256:")).open("rb")


def check_target(path: Path, *, overwrite: bool) -> None:
    """Refuse a pack file name before anything is read for it."""
    if path.is_dir():
        raise RegistryError(f"{path} is a directory", hint="give a file name, e.g. dog.dvpack")
    if path.exists() and not overwrite:
        raise RegistryError(f"{path} already exists", hint="pass --force to overwrite it")
    if not path.parent.is_dir():
        raise NotFoundError(f"no such directory: {path.parent}")


def write_pack(path: Path, manifests: Sequence[Manifest], blobs: BlobStore) -> None:
    """Write `manifests` and the blobs they reference to `path`, atomically. The caller keeps
    the registry from changing meanwhile (its read lock)."""
    index = {
        "dvpack": PACK_VERSION,
        "manifests": [
            {
                "kind": m.kind,
                "name": m.name,
                "tag": m.tag,
                "digest": sha256_digest(encode_manifest(m)),
                "manifest": m.to_document(),
            }
            for m in manifests
        ],
    }
    index_bytes = json.dumps(index, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
    digests = sorted({entry.digest for m in manifests for entry in m.files})
    # The tar is closed (and its file with it) before atomic_path renames it into place.
    with atomic_path(path) as tmp, tmp.open("xb") as raw, _open_for_writing(raw, path) as tar:
        _add_member(tar, INDEX_NAME, io.BytesIO(index_bytes), len(index_bytes))
        for digest in digests:
            with blobs.path(digest).open("rb") as stream:  # streamed into the tar, blob by blob
                size = os.fstat(stream.fileno()).st_size
                member = f"blobs/sha256-{digest.removeprefix('sha256:')}"
                _add_member(tar, member, stream, size)


def _open_for_writing(raw: BinaryIO, path: Path) -> tarfile.TarFile:
    # Adapters and images barely compress, so gzip only when the file name asks for it.
    if path.name.endswith((".gz", ".tgz")):
        return tarfile.open(fileobj=raw, mode="w:gz")
    return tarfile.open(fileobj=raw, mode="w")


def _add_member(tar: tarfile.TarFile, name: str, stream: Any, size: int) -> None:
    # Fixed metadata: the same entries always make the same file.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, stream)


@contextlib.contextmanager
def read_pack(path: Path) -> Iterator[Pack]:
    """Unpack and check `path` in a temporary directory; RegistryError names what is wrong."""
    if not path.exists():
        raise NotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise RegistryError(f"{path} is not a file")
    with tempfile.TemporaryDirectory(prefix="dv-import-") as scratch:
        blob_dir = Path(scratch)
        index_bytes, blob_sizes = _extract(path, blob_dir)
        yield Pack(path, _check_index(path, index_bytes, blob_sizes, blob_dir), blob_dir)


def _extract(path: Path, blob_dir: Path) -> tuple[bytes, dict[str, int]]:
    """Unpack manifest.json into memory and each blob into `blob_dir`, named by its verified hex."""
    index_bytes: bytes | None = None
    blob_sizes: dict[str, int] = {}
    seen: set[str] = set()
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                name = _check_member(path, member)
                if name is None:
                    continue
                if name in seen:
                    raise RegistryError(f"refusing {path}: member {name!r} appears twice")
                seen.add(name)
                stream = tar.extractfile(member)
                if stream is None:
                    raise RegistryError(f"refusing {path}: member {name!r} has no content")
                if name == INDEX_NAME:
                    if member.size > MAX_INDEX_BYTES:
                        raise RegistryError(f"refusing {path}: {INDEX_NAME} is implausibly large")
                    index_bytes = stream.read()
                    continue
                match = _BLOB_MEMBER_RE.fullmatch(name)
                assert match is not None
                expected = "sha256:" + match.group(1)
                with (blob_dir / match.group(1)).open("xb") as target:
                    digest, size = copy_hashing(stream, target)
                if digest != expected:
                    raise RegistryError(
                        f"refusing {path}: blob {name!r} does not match its digest "
                        "(the file is damaged or was tampered with)"
                    )
                blob_sizes[expected] = size
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "could not be opened successfully" in reason:
            reason = "not a tar or tar.gz file"
        raise RegistryError(f"{path} is not a readable .dvpack archive ({reason.rstrip(':')})") from None
    except OSError as exc:
        raise RegistryError(f"cannot import {path}: {exc.strerror or exc}") from None
    if index_bytes is None:
        raise RegistryError(f"refusing {path}: it has no {INDEX_NAME}", hint="is it a .dvpack file?")
    return index_bytes, blob_sizes


def _check_member(path: Path, member: tarfile.TarInfo) -> str | None:
    """The member's name if it is a file we accept, None for the blobs/ directory entry."""
    name = member.name
    posix = PurePosixPath(name)
    if name.startswith(("/", "\\")) or posix.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise RegistryError(f"refusing {path}: member {name!r} has an absolute path")
    if ".." in posix.parts or "\\" in name:
        raise RegistryError(f"refusing {path}: member {name!r} points outside the archive")
    if member.issym() or member.islnk():
        raise RegistryError(f"refusing {path}: member {name!r} is a link")
    if member.isdir():
        if str(posix) in {"blobs", "."}:
            return None
        raise RegistryError(f"refusing {path}: unexpected directory {name!r}")
    if not member.isreg() or member.issparse():
        raise RegistryError(f"refusing {path}: member {name!r} is not a regular file")
    normalized = str(posix)
    if normalized != INDEX_NAME and not _BLOB_MEMBER_RE.fullmatch(normalized):
        raise RegistryError(f"refusing {path}: unexpected member {name!r}")
    return normalized


def _check_index(path: Path, index_bytes: bytes, blob_sizes: dict[str, int], blob_dir: Path) -> list[PackEntry]:
    try:
        index = json.loads(index_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistryError(f"refusing {path}: {INDEX_NAME} is not valid JSON ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise RegistryError(f"refusing {path}: {INDEX_NAME} has no list of manifests")
    version = index.get("dvpack")
    if isinstance(version, int) and version > PACK_VERSION:
        raise NewerSchemaError(
            f"{path} was written by a newer dv (dvpack {version}, this dv reads {PACK_VERSION}); upgrade",
            hint="upgrade dv, e.g. `pip install -U dreamvideo`",
        )
    if version != PACK_VERSION:
        raise RegistryError(f"refusing {path}: unknown dvpack version {version!r}")
    if not index["manifests"]:
        raise RegistryError(f"refusing {path}: it holds no manifests")
    entries: list[PackEntry] = []
    kinds: dict[str, str] = {}
    seen_refs: set[str] = set()
    for item in index["manifests"]:
        entry = _check_entry(path, item, blob_sizes, blob_dir)
        manifest = entry.manifest
        if manifest.ref in seen_refs:
            raise RegistryError(f"refusing {path}: {manifest.ref} appears twice")
        seen_refs.add(manifest.ref)
        if kinds.setdefault(manifest.name, manifest.kind) != manifest.kind:
            raise RegistryError(f"refusing {path}: {manifest.name!r} is both a subject and a motion")
        entries.append(entry)
    return entries


def _check_entry(path: Path, item: Any, blob_sizes: dict[str, int], blob_dir: Path) -> PackEntry:
    if not isinstance(item, dict) or not isinstance(item.get("manifest"), dict):
        raise RegistryError(f"refusing {path}: a manifest entry is malformed")
    try:
        kind = check_kind(str(item.get("kind")))
        name = check_name(str(item.get("name")))
        tag = check_tag(str(item.get("tag")))
    except RegistryError as exc:
        raise RegistryError(f"refusing {path}: {exc}") from None
    where = f"manifest {name}:{tag} in {path}"
    try:
        manifest = manifest_from_document(item["manifest"], tag=tag, where=where)
    except NewerSchemaError:
        raise
    except RegistryError as exc:
        raise RegistryError(f"refusing {path}: {exc}") from None
    if manifest.kind != kind or manifest.name != name:
        raise RegistryError(f"refusing {path}: {where} describes {manifest.kind} {manifest.name!r}")
    data = encode_manifest(manifest)
    if "digest" in item and item["digest"] != sha256_digest(data):
        raise RegistryError(f"refusing {path}: {where} does not match its digest")
    for entry in manifest.files:
        what = f"file {entry.filename!r} of {manifest.ref}"
        size = blob_sizes.get(entry.digest)
        if size is None:
            raise RegistryError(f"refusing {path}: the blob of {what} is not in the archive")
        if size != entry.size:
            raise RegistryError(f"refusing {path}: {what} is {size} bytes, its manifest says {entry.size}")
        try:
            check_file(blob_dir / entry.digest.removeprefix("sha256:"), entry.media_type, what)
        except RegistryError as exc:
            raise RegistryError(f"refusing {path}: {exc}") from None
    return PackEntry(manifest, data)
