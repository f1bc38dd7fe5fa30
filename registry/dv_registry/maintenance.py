"""`verify`, `prune` and `du`: looking after a registry. The Registry calls these under its lock
(`verify` and `usage` the shared one, `prune` the exclusive one)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from dv_registry.blobs import BlobFile, BlobStore
from dv_registry.catalog import Catalog
from dv_registry.errors import RegistryError
from dv_registry.fsutil import file_size, fsync_dir, is_tmp_name, list_dir, remove_file, walk_files
from dv_registry.manifest import KINDS, Kind, check_kind
from dv_registry.refs import check_name, check_tag


@dataclass(frozen=True)
class Problem:
    """One thing `verify` found wrong. `ref` is None when no single tag is to blame."""

    path: str  # relative to $DV_HOME
    message: str
    ref: str | None = None

    def __str__(self) -> str:
        return f"{self.ref}: {self.message}" if self.ref else f"{self.path}: {self.message}"


@dataclass(frozen=True)
class PrunedItem:
    path: str  # relative to $DV_HOME
    size: int
    digest: str | None = None  # set for blobs


@dataclass(frozen=True)
class PruneReport:
    dry_run: bool
    blobs: list[PrunedItem]  # unreferenced blobs
    leftovers: list[PrunedItem]  # temporary files of interrupted writes, empty name directories

    @property
    def bytes_freed(self) -> int:
        return sum(item.size for item in self.blobs) + sum(item.size for item in self.leftovers)


@dataclass(frozen=True)
class NameUsage:
    kind: Kind
    name: str
    tags: list[str]
    bytes: int  # distinct blobs referenced by any tag of the name


@dataclass(frozen=True)
class Usage:
    home: Path
    blob_count: int
    blob_bytes: int
    manifest_count: int
    manifest_bytes: int
    unreferenced_blob_count: int
    unreferenced_bytes: int  # what `prune` would free from blobs
    leftover_bytes: int  # what `prune` would free from interrupted writes
    names: list[NameUsage]

    @property
    def total_bytes(self) -> int:
        return self.blob_bytes + self.manifest_bytes + self.leftover_bytes

    @property
    def reclaimable_bytes(self) -> int:
        return self.unreferenced_bytes + self.leftover_bytes


def verify(catalog: Catalog, blobs: BlobStore) -> list[Problem]:
    """Re-hash every blob a manifest references and check every manifest; [] means healthy."""
    problems: list[Problem] = []
    blob_state: dict[str, str | None] = {}  # digest -> None if sound, else what is wrong
    names: dict[str, set[str]] = {}
    for stored in catalog.scan():
        relpath = str(stored.path.relative_to(catalog.home))
        if stored.kind not in KINDS:
            problems.append(Problem(relpath, f"unknown kind directory {stored.kind!r}"))
            continue
        names.setdefault(stored.name, set()).add(stored.kind)
        try:
            check_name(stored.name)
            check_tag(stored.tag)
            manifest = catalog.load(stored)
        except RegistryError as exc:
            problems.append(Problem(relpath, str(exc), stored.ref))
            continue
        for entry in manifest.files:
            if entry.digest not in blob_state:
                blob_state[entry.digest] = blobs.check(entry.digest, entry.size)
            state = blob_state[entry.digest]
            if state is not None:
                blob = f"blobs/sha256-{entry.digest.removeprefix('sha256:')}"
                message = f"file {entry.filename!r} ({entry.role}): {state}"
                problems.append(Problem(blob, message, stored.ref))
    for name, kinds in sorted(names.items()):
        if len(kinds) > 1:
            message = f"{name!r} is both a subject and a motion"
            problems.append(Problem(f"manifests/*/{name}", message, name))
    return problems


def prune(catalog: Catalog, blobs: BlobStore, *, dry_run: bool) -> PruneReport:
    """Remove blobs no manifest references and the leftovers of interrupted writes. The caller
    holds the exclusive lock, so no change in flight is about to reference a blob."""
    garbage = blobs.garbage(referenced_digests(catalog))
    home = catalog.home
    unreferenced = [_item(home, blob) for blob in garbage.blobs]
    leftovers = [_item(home, blob) for blob in garbage.leftovers]
    for filename in list_dir(home):
        if is_tmp_name(filename):
            leftovers.append(_item(home, BlobFile(home / filename, file_size(home / filename))))
    empty_dirs: list[Path] = []
    for kind in list_dir(catalog.directory):
        for name in list_dir(catalog.directory / kind):
            name_dir = catalog.directory / kind / name
            contents = list_dir(name_dir)
            for filename in contents:
                if is_tmp_name(filename):
                    path = name_dir / filename
                    leftovers.append(_item(home, BlobFile(path, file_size(path))))
            if all(is_tmp_name(f) for f in contents):
                empty_dirs.append(name_dir)
    if not dry_run:
        for item in [*unreferenced, *leftovers]:
            remove_file(home / item.path)
        for directory in empty_dirs:
            with contextlib.suppress(OSError):
                directory.rmdir()
                fsync_dir(directory.parent)
    return PruneReport(dry_run=dry_run, blobs=unreferenced, leftovers=leftovers)


def referenced_digests(catalog: Catalog) -> set[str]:
    """Digests any manifest file mentions, read leniently so that a manifest this dv cannot
    fully parse (a newer schema) still keeps its blobs."""
    referenced: set[str] = set()
    for stored in catalog.scan():
        try:
            document = json.loads(stored.path.read_bytes().decode("utf-8"))
            files = document["files"]
            referenced.update(str(item["digest"]) for item in files)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"{stored.path.relative_to(catalog.home)} is unreadable ({exc}); pruning could remove blobs it needs",
                hint=f"fix it or remove it with `dv rm {stored.ref}`, then prune",
            ) from None
    return referenced


def usage(catalog: Catalog, blobs: BlobStore) -> Usage:
    """Disk usage: blobs, manifests, per name, and what `prune` would free."""
    home = catalog.home
    blob_sizes = {blob.digest: blob.size for blob in blobs.files() if blob.digest is not None}
    manifest_bytes = 0
    manifest_count = 0
    per_name: dict[tuple[str, str], tuple[list[str], set[str]]] = {}
    referenced: set[str] = set()
    for stored in catalog.scan():
        manifest_count += 1
        manifest_bytes += file_size(stored.path)
        tags, digests = per_name.setdefault((stored.kind, stored.name), ([], set()))
        tags.append(stored.tag)
        try:
            manifest = catalog.load(stored)
        except RegistryError:
            continue
        digests.update(entry.digest for entry in manifest.files)
        referenced.update(digests)
    garbage = blobs.garbage(referenced)
    leftover_bytes = sum(blob.size for blob in garbage.leftovers)
    leftover_bytes += sum(file_size(p) for p in walk_files(catalog.directory) if is_tmp_name(p.name))
    leftover_bytes += sum(file_size(home / f) for f in list_dir(home) if is_tmp_name(f))
    names = [
        NameUsage(
            kind=check_kind(kind),
            name=name,
            tags=tags,
            bytes=sum(blob_sizes.get(d, 0) for d in digests),
        )
        for (kind, name), (tags, digests) in sorted(per_name.items(), key=lambda i: i[0][1])
        if kind in KINDS
    ]
    return Usage(
        home=home,
        blob_count=len(blob_sizes),
        blob_bytes=sum(blob_sizes.values()),
        manifest_count=manifest_count,
        manifest_bytes=manifest_bytes,
        unreferenced_blob_count=len(garbage.blobs),
        unreferenced_bytes=sum(blob.size for blob in garbage.blobs),
        leftover_bytes=leftover_bytes,
        names=names,
    )


def _item(home: Path, blob: BlobFile) -> PrunedItem:
    return PrunedItem(path=str(blob.path.relative_to(home)), size=blob.size, digest=blob.digest)
