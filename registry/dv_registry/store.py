"""The Registry: a content-addressed store of subject and motion adapters under `$DV_HOME`.

Layout:
    lock                                  the cross-process lock (see lock.py)
    journal.json                          only while a change is being applied (see journal.py)
    blobs/sha256-<hex>                    immutable file contents, named by their sha256 (blobs.py)
    manifests/<kind>/<name>/<tag>.json    one manifest per tag; tags of equal content are equal
                                          bytes (catalog.py)

Writers hold the exclusive lock for the whole of a change, readers the shared lock, so a reader
never sees half a change, and `prune` never removes a blob that a change in flight is about to
reference. Every change goes through `change.writing`: blobs first, then the manifests in one
journaled commit. `.dvpack` files are archive.py's; `verify`, `prune` and `du` maintenance.py's.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import ValidationError

from dv_registry import maintenance
from dv_registry.archive import check_target, read_pack, write_pack
from dv_registry.blobs import BlobStore
from dv_registry.catalog import Catalog, StoredManifest, manifest_relpath, tag_sort_key
from dv_registry.change import HOME_ENV, Change, reading, writing
from dv_registry.errors import NotFoundError, RegistryError
from dv_registry.lock import RegistryLock
from dv_registry.maintenance import Problem, PruneReport, Usage
from dv_registry.manifest import (
    KINDS,
    FileEntry,
    Kind,
    Manifest,
    check_filename,
    check_kind,
    decode_manifest,
    describe_validation_error,
    encode_manifest,
)
from dv_registry.media import check_media_type
from dv_registry.refs import (
    LATEST,
    Ref,
    check_name,
    check_tag,
    is_reserved_tag,
    is_version_tag,
    parse_ref,
    version_number,
)

DEFAULT_LOCK_TIMEOUT = 600.0
_RESERVED_FIELDS = frozenset({"schema_version", "kind", "name", "tag", "created", "files"})


def default_home() -> Path:
    """`$DV_HOME`, else the platform's per-user data directory for dv."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return platformdirs.user_data_path("dv", appauthor=False)


@dataclass
class NewFile:
    """A file to store with a new version."""

    role: str  # "adapter" | "token_embedding" | "reference_image" | "mask" | "preview" | "config" | ...
    filename: str  # a plain basename, used on export/extraction
    data: bytes | Path
    media_type: str  # one of MEDIA_TYPES; the content is checked against it


@dataclass
class NewEntry:
    """One manifest to write: its files plus the manifest fields the caller chooses."""

    files: list[NewFile]
    fields: dict[str, Any] = field(default_factory=dict)


class Registry:
    """The store under one home directory. Safe to use from many processes at once."""

    def __init__(self, home: Path | str | None = None, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.blobs = BlobStore(self.home / "blobs")
        self._catalog = Catalog(self.home)
        self._lock = RegistryLock(self.home / "lock", lock_timeout)

    def __repr__(self) -> str:
        return f"Registry({str(self.home)!r})"

    @property
    def blobs_dir(self) -> Path:
        return self.blobs.directory

    @property
    def manifests_dir(self) -> Path:
        return self._catalog.directory

    # ------------------------------------------------------------------ locking

    def _writing(self) -> contextlib.AbstractContextManager[Change]:
        return writing(self.home, self._lock, self.blobs)

    def _reading(self) -> contextlib.AbstractContextManager[None]:
        return reading(self.home, self._lock, self.blobs)

    # ------------------------------------------------------------------ reading

    def resolve(self, ref: str, kind: Kind | None = None) -> Manifest:
        """The manifest `ref` names: `name` (= name:latest), `name:tag` or `name@sha256:<prefix>`.

        With `kind`, a name of the other kind is an error that says so.
        """
        parsed = parse_ref(ref)
        with self._reading():
            kinds = self._catalog.kinds_of(parsed.name)
            if not kinds:
                raise NotFoundError(
                    f"no subject or motion named {parsed.name!r}",
                    hint=self._catalog.name_hint(parsed.name),
                )
            found_kind = kinds[0]
            if kind is not None and found_kind != kind:
                raise RegistryError(
                    f"{parsed.name!r} is a {found_kind}, not a {kind}",
                    hint=f"see `dv list --kind {kind}`",
                )
            stored = self._catalog.scan(found_kind, parsed.name)
            if parsed.tag is not None:
                for item in stored:
                    if item.tag == parsed.tag:
                        return self._catalog.load(item)
                tags = ", ".join(item.tag for item in stored)
                raise NotFoundError(
                    f"{found_kind} {parsed.name!r} has no tag {parsed.tag!r}",
                    hint=f"its tags: {tags}",
                )
            assert parsed.digest_prefix is not None
            return self._by_digest(found_kind, parsed.name, parsed.digest_prefix, stored)

    def _by_digest(self, kind: Kind, name: str, prefix: str, stored: builtins.list[StoredManifest]) -> Manifest:
        matches: dict[str, list[Manifest]] = {}
        for item in stored:
            manifest = self._catalog.load(item)
            if manifest.digest.removeprefix("sha256:").startswith(prefix):
                matches.setdefault(manifest.digest, []).append(manifest)
        if not matches:
            raise NotFoundError(
                f"no tag of {kind} {name!r} has a digest starting with {prefix!r}",
                hint="see `dv list` for digests",
            )
        if len(matches) > 1:
            candidates = ", ".join(sorted(d.removeprefix("sha256:")[:16] for d in matches))
            raise RegistryError(
                f"digest prefix {prefix!r} of {name!r} is ambiguous: it matches {candidates}",
                hint="give more hex digits",
            )
        # Equal digests are equal content; name it by its version tag where there is one.
        (manifests,) = matches.values()
        manifests.sort(key=lambda m: (not is_version_tag(m.tag), tag_sort_key(m.tag)))
        return manifests[0]

    def list(self, kind: Kind | None = None) -> builtins.list[Manifest]:
        """Every (name, tag), sorted by name then tag. Unreadable manifests are skipped
        (`verify` names them)."""
        if kind is not None:
            check_kind(kind)
        result: builtins.list[Manifest] = []
        with self._reading():
            for stored in self._catalog.scan(kind):
                if stored.kind not in KINDS:
                    continue
                with contextlib.suppress(RegistryError):
                    result.append(self._catalog.load(stored))
        return result

    def tags(self, name: str) -> builtins.list[str]:
        """Every tag of `name`, in display order; empty if there is no such name."""
        check_name(name)
        with self._reading():
            return [s.tag for kind in KINDS for s in self._catalog.scan(kind, name)]

    def tags_for(self, manifest: Manifest) -> builtins.list[str]:
        """Every tag of the manifest's name whose content is this manifest (e.g. v2 and latest)."""
        with self._reading():
            return [
                s.tag for s in self._catalog.scan(manifest.kind, manifest.name) if s.read_digest() == manifest.digest
            ]

    def blob_path(self, digest: str) -> Path:
        """Path of a stored blob. Treat it as read-only: blobs are shared between tags."""
        return self.blobs.path(digest)

    def read_file(self, manifest: Manifest, role: str) -> bytes:
        """The content of the manifest's one file with `role` (its size is re-checked)."""
        return self.read_entry(manifest.file(role))

    def read_entry(self, entry: FileEntry) -> bytes:
        with self._reading():
            data = self.blob_path(entry.digest).read_bytes()
        if len(data) != entry.size:
            raise RegistryError(
                f"file {entry.filename!r} is damaged: {len(data)} bytes, expected {entry.size}",
                hint="run `dv verify`",
            )
        return data

    # ------------------------------------------------------------------ writing

    def add_version(
        self,
        kind: Kind,
        name: str,
        entry: NewEntry,
        checkpoints: dict[str, NewEntry] | None = None,
    ) -> Manifest:
        """Store a new version `vN` of `name` (N = the next free number) and move `latest` to it.

        `checkpoints` maps extra tags (e.g. "step500") to intermediate results; they are written
        in the same all-or-nothing change. Returns the `vN` manifest.
        """
        kind = check_kind(kind)
        check_name(name)
        checkpoints = checkpoints or {}
        for tag in checkpoints:
            check_tag(tag)
            if is_reserved_tag(tag):
                raise RegistryError(f"checkpoint tag {tag!r} is reserved for versions")
        created = datetime.now(UTC)
        # Field and file-list errors are the caller's; find them before anything is written.
        for new in [entry, *checkpoints.values()]:
            self._build_manifest(kind, name, "latest", created, new, files=[])
            filenames = [check_filename(f.filename) for f in new.files]
            for new_file in new.files:
                check_media_type(new_file.media_type)
            if len(set(filenames)) != len(filenames):
                raise RegistryError(f"two files of one {name} entry have the same name: {filenames}")
        with self._writing() as change:
            self._check_namespace(name, kind)
            version = 1 + max((version_number(s.tag) or 0 for s in self._catalog.scan(kind, name)), default=0)
            for tag, new in checkpoints.items():
                manifest = self._build_manifest(kind, name, tag, created, new, self._store_files(change, new))
                self._stage(change, manifest)
            result = self._build_manifest(kind, name, f"v{version}", created, entry, self._store_files(change, entry))
            self._stage(change, result)
            self._stage(change, result.with_tag(LATEST))
        return result

    def _build_manifest(
        self,
        kind: Kind,
        name: str,
        tag: str,
        created: datetime,
        new: NewEntry,
        files: builtins.list[FileEntry],
    ) -> Manifest:
        reserved = _RESERVED_FIELDS & set(new.fields)
        if reserved:
            raise RegistryError(f"manifest fields {sorted(reserved)} are set by the registry")
        try:
            return Manifest.model_validate(
                {
                    **new.fields,
                    "kind": kind,
                    "name": name,
                    "tag": tag,
                    "created": created,
                    "files": files,
                }
            )
        except ValidationError as exc:
            raise RegistryError(f"invalid manifest for {name}:{tag}: {describe_validation_error(exc)}") from None

    def _store_files(self, change: Change, new: NewEntry) -> builtins.list[FileEntry]:
        entries: builtins.list[FileEntry] = []
        for new_file in new.files:
            check_filename(new_file.filename)
            check_media_type(new_file.media_type)
            what = f"file {new_file.filename!r} ({new_file.role})"
            if isinstance(new_file.data, bytes | bytearray | memoryview):
                digest, size = change.put_blob(bytes(new_file.data), media_type=new_file.media_type, what=what)
            else:
                source = Path(new_file.data)
                if not source.is_file():
                    raise NotFoundError(f"no such file: {source}")
                with source.open("rb") as stream:
                    digest, size = change.put_blob(stream, media_type=new_file.media_type, what=what)
            try:
                entries.append(
                    FileEntry(
                        role=new_file.role,
                        filename=new_file.filename,
                        digest=digest,
                        size=size,
                        media_type=new_file.media_type,
                    )
                )
            except ValidationError as exc:
                raise RegistryError(f"invalid {what}: {describe_validation_error(exc)}") from None
        return entries

    @staticmethod
    def _stage(change: Change, manifest: Manifest, data: bytes | None = None) -> None:
        """Write the manifest (its canonical bytes unless `data`) when the change commits."""
        relpath = manifest_relpath(manifest.kind, manifest.name, manifest.tag)
        change.write(relpath, encode_manifest(manifest) if data is None else data)

    def _check_namespace(self, name: str, kind: Kind) -> None:
        for other in self._catalog.kinds_of(name):
            if other != kind:
                raise RegistryError(
                    f"{name!r} is already a {other}; a name is either a subject or a motion",
                    hint=f"choose another name, or remove the {other} with `dv rm {name}`",
                )

    def remove(self, refs: str | Sequence[str], *, dry_run: bool = False) -> builtins.list[str]:
        """Remove tags, all in one change: `name` removes every tag of the name, `name:tag` one
        tag, `name@sha256:<prefix>` every tag with that content. Blobs stay until `prune`.

        Every ref must exist, or nothing is removed. Returns the `name:tag` of what was (with
        dry_run: would be) removed; damaged manifests can be removed too.
        """
        ref_list = [refs] if isinstance(refs, str) else builtins.list(refs)
        parsed_refs = [parse_ref(ref) for ref in ref_list]
        if dry_run:
            with self._reading():
                return builtins.list(self._targets(parsed_refs))
        with self._writing() as change:
            targets = self._targets(parsed_refs)
            for stored in targets.values():
                change.delete(manifest_relpath(stored.kind, stored.name, stored.tag))
        return builtins.list(targets)

    def _targets(self, parsed_refs: builtins.list[Ref]) -> dict[str, StoredManifest]:
        targets: dict[str, StoredManifest] = {}
        for parsed in parsed_refs:
            for stored in self._removal_targets(parsed):
                targets.setdefault(stored.ref, stored)
        return targets

    def _removal_targets(self, parsed: Ref) -> builtins.list[StoredManifest]:
        kinds = self._catalog.kinds_of(parsed.name)
        if not kinds:
            raise NotFoundError(
                f"no subject or motion named {parsed.name!r}",
                hint=self._catalog.name_hint(parsed.name),
            )
        stored = [s for kind in kinds for s in self._catalog.scan(kind, parsed.name)]
        if not parsed.explicit:
            return stored
        if parsed.tag is not None:
            targets = [s for s in stored if s.tag == parsed.tag]
            if not targets:
                tags = ", ".join(s.tag for s in stored)
                raise NotFoundError(
                    f"{kinds[0]} {parsed.name!r} has no tag {parsed.tag!r}",
                    hint=f"its tags: {tags}",
                )
            return targets
        assert parsed.digest_prefix is not None
        wanted = self._by_digest(kinds[0], parsed.name, parsed.digest_prefix, stored).digest
        return [s for s in stored if s.read_digest() == wanted]

    def tag(self, src_ref: str, new_ref: str) -> Manifest:
        """Point `new_ref` (`name:tag`; a bare name means name:latest) at the content of `src_ref`.

        An existing tag is moved (e.g. `latest` back to `v1`); version tags `vN` are made only by
        `add_version` and never moved. A tag stays within its name: a subject's token (`<dog>`)
        and a motion's phrase belong to the name they were learnt under, so `intr:v1` is never
        tagged as `dog:x`.
        """
        target = parse_ref(new_ref)
        if target.digest_prefix is not None:
            raise RegistryError(f"cannot tag as {new_ref!r}", hint="give the new tag as name:tag")
        assert target.tag is not None
        if is_version_tag(target.tag):
            raise RegistryError(
                f"tag {target.tag!r} is reserved: version tags are given by learning",
                hint="choose another tag",
            )
        with self._writing() as change:
            source = self.resolve(src_ref)
            self._check_namespace(target.name, source.kind)
            if target.name != source.name:
                raise RegistryError(
                    f"cannot tag {source.ref} as {new_ref!r}: a tag stays within its name "
                    f"({source.name}'s adapters are learnt for {source.name})",
                    hint=f"tag it as {source.name}:{target.tag}",
                )
            data = self.manifest_bytes(source)
            new = decode_manifest(data, tag=target.tag, where=f"manifest {target.name}")
            self._stage(change, new, data)
        return new

    def manifest_bytes(self, manifest: Manifest) -> bytes:
        """The stored bytes of a manifest (what its digest is the sha256 of)."""
        with self._reading():
            try:
                return self._catalog.path(manifest.kind, manifest.name, manifest.tag).read_bytes()
            except FileNotFoundError:
                raise NotFoundError(f"{manifest.ref} is not in the registry") from None

    # ------------------------------------------------------------------ .dvpack files

    def export(self, ref: str, path: Path | str, *, overwrite: bool = False) -> builtins.list[Manifest]:
        """Write `ref` and its blobs to one `.dvpack` file. A bare name exports every tag of it."""
        parsed = parse_ref(ref)
        path = Path(path)
        check_target(path, overwrite=overwrite)
        with self._reading():
            if parsed.explicit:
                manifests = [self.resolve(ref)]
            else:
                # A bare name is the whole history of the name, as with `dv rm NAME`.
                tags = self.tags(parsed.name)
                if not tags:
                    self.resolve(ref)  # raises the usual "no subject or motion named ..."
                manifests = [self.resolve(f"{parsed.name}:{tag}") for tag in tags]
            write_pack(path, manifests, self.blobs)
        return manifests

    def import_(self, path: Path | str) -> builtins.list[Manifest]:
        """Add the entries of a `.dvpack` file; all are checked before anything is written."""
        with read_pack(Path(path)) as pack, self._writing() as change:
            for entry in pack.entries:
                manifest = entry.manifest
                try:
                    self._check_namespace(manifest.name, manifest.kind)
                except RegistryError as exc:
                    message = f"refusing {pack.path}: {exc.message}"
                    raise RegistryError(message, hint=exc.hint) from None
                with contextlib.suppress(NotFoundError):
                    if self.manifest_bytes(manifest) == entry.data:
                        continue  # already here, identical
                    message = f"{manifest.ref} already exists with different content"
                    raise RegistryError(
                        f"refusing {pack.path}: {message}",
                        hint=f"remove it first with `dv rm {manifest.ref}`",
                    )
                self._stage(change, manifest, entry.data)
            # Every check has passed; only now does the registry change.
            for digest in pack.digests:
                with pack.open_blob(digest) as stream:
                    if change.put_blob(stream, what=digest)[0] != digest:
                        message = f"the copy of blob {digest} changed while importing {pack.path}"
                        raise RegistryError(message)
        return [entry.manifest for entry in pack.entries]

    # ------------------------------------------------------------------ maintenance

    def verify(self) -> builtins.list[Problem]:
        """Re-hash every blob a manifest references and check every manifest; [] means healthy."""
        with self._reading():
            return maintenance.verify(self._catalog, self.blobs)

    def prune(self, dry_run: bool = False) -> PruneReport:
        """Remove blobs no manifest references and the leftovers of interrupted writes."""
        if not self.home.is_dir():
            return PruneReport(dry_run=dry_run, blobs=[], leftovers=[])
        with self._writing():
            return maintenance.prune(self._catalog, self.blobs, dry_run=dry_run)

    def du(self) -> Usage:
        """Disk usage: blobs, manifests, per name, and what `prune` would free."""
        with self._reading():
            return maintenance.usage(self._catalog, self.blobs)
