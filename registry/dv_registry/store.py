"""The Registry: a content-addressed store of subject and motion adapters under `$DV_HOME`.

Layout:
    lock                                  the cross-process lock (see lock.py)
    journal.json                          only while a change is being applied (see journal.py)
    blobs/sha256-<hex>                    immutable file contents, named by their sha256
    manifests/<kind>/<name>/<tag>.json    one manifest per tag; tags of equal content are equal bytes

Writers hold the exclusive lock for the whole of a change, readers the shared lock, so a reader
never sees half a change, and `prune` never removes a blob that a change in flight is about to
reference.
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import platformdirs
from pydantic import ValidationError

from dv_registry import journal
from dv_registry.errors import NotFoundError, RegistryError
from dv_registry.fsutil import (
    copy_hashing,
    fsync_dir,
    hash_file,
    is_tmp_name,
    make_dirs,
    remove_file,
    tmp_path_for,
    walk_files,
)
from dv_registry.lock import RegistryLock
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
    sha256_digest,
)
from dv_registry.media import check_media_type, check_stream
from dv_registry.refs import (
    LATEST,
    Ref,
    check_digest,
    check_name,
    check_tag,
    is_reserved_tag,
    is_version_tag,
    parse_ref,
    version_number,
)

HOME_ENV = "DV_HOME"
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


@dataclass(frozen=True)
class _Stored:
    """A manifest file found on disk, not yet parsed."""

    kind: str
    name: str
    tag: str
    path: Path

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


def tag_sort_key(tag: str) -> tuple[int, int, str]:
    """latest, then v1, v2, ... in numeric order, then every other tag alphabetically."""
    if tag == LATEST:
        return (0, 0, tag)
    number = version_number(tag)
    if number is not None:
        return (1, number, tag)
    return (2, 0, tag)


class Registry:
    """The store under one home directory. Safe to use from many processes at once."""

    def __init__(
        self, home: Path | str | None = None, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self._lock = RegistryLock(self.home / "lock", lock_timeout)

    def __repr__(self) -> str:
        return f"Registry({str(self.home)!r})"

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def manifests_dir(self) -> Path:
        return self.home / "manifests"

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            make_dirs(self.blobs_dir)
            make_dirs(self.manifests_dir)
            self._lock.acquire("exclusive")
        except OSError as exc:
            raise RegistryError(
                f"cannot write to the registry at {self.home}: {exc.strerror or exc}",
                hint=f"check its permissions, or set {HOME_ENV} to a writable directory",
            ) from exc
        try:
            journal.recover(self.home)
            yield
        except OSError as exc:
            # A full disk or a permission problem is the user's to fix, not a crash. The journal
            # and the write order leave the registry as it was or completed.
            raise RegistryError(f"cannot write to the registry at {self.home}: {exc}") from exc
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        if not self.home.is_dir():
            # Nothing to read and nothing to lock; reading must not create the home.
            yield
            return
        if self._lock.depth == 0:
            # A journal with no writer holding the lock is a crashed change: finish it first.
            while True:
                if journal.pending(self.home):
                    with self._writing():
                        pass
                self._lock.acquire("shared")
                if not journal.pending(self.home):
                    break
                self._lock.release()
        else:
            self._lock.acquire("shared")
        try:
            yield
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ scanning

    def _scan(self, kind: str | None = None, name: str | None = None) -> builtins.list[_Stored]:
        """Manifest files on disk, sorted by name then tag. Temporary files are skipped."""
        found: builtins.list[_Stored] = []
        kinds = [kind] if kind is not None else sorted(_list_dir(self.manifests_dir))
        for kind_name in kinds:
            kind_dir = self.manifests_dir / kind_name
            names = [name] if name is not None else _list_dir(kind_dir)
            for entry_name in names:
                name_dir = kind_dir / entry_name
                for filename in _list_dir(name_dir):
                    if is_tmp_name(filename) or not filename.endswith(".json"):
                        continue
                    path = name_dir / filename
                    if path.is_file():
                        found.append(
                            _Stored(kind_name, entry_name, filename.removesuffix(".json"), path)
                        )
        found.sort(key=lambda s: (s.name, tag_sort_key(s.tag), s.kind))
        return found

    def _kinds_of(self, name: str) -> builtins.list[Kind]:
        return [kind for kind in KINDS if self._scan(kind, name)]

    def _load(self, stored: _Stored) -> Manifest:
        where = f"manifest {stored.ref} ({stored.path.relative_to(self.home)})"
        try:
            data = stored.path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{stored.ref} was removed while being read") from None
        manifest = decode_manifest(data, tag=stored.tag, where=where)
        if manifest.kind != stored.kind or manifest.name != stored.name:
            raise RegistryError(
                f"{where} is damaged: it describes {manifest.kind} {manifest.name!r}",
                hint="run `dv verify`",
            )
        return manifest

    # ------------------------------------------------------------------ reading

    def resolve(self, ref: str, kind: Kind | None = None) -> Manifest:
        """The manifest `ref` names: `name` (= name:latest), `name:tag` or `name@sha256:<prefix>`.

        With `kind`, a name of the other kind is an error that says so.
        """
        parsed = parse_ref(ref)
        with self._reading():
            kinds = self._kinds_of(parsed.name)
            if not kinds:
                raise NotFoundError(
                    f"no subject or motion named {parsed.name!r}", hint=self._name_hint(parsed.name)
                )
            found_kind = kinds[0]
            if kind is not None and found_kind != kind:
                raise RegistryError(
                    f"{parsed.name!r} is a {found_kind}, not a {kind}",
                    hint=f"see `dv list --kind {kind}`",
                )
            stored = self._scan(found_kind, parsed.name)
            if parsed.tag is not None:
                for item in stored:
                    if item.tag == parsed.tag:
                        return self._load(item)
                tags = ", ".join(item.tag for item in stored)
                raise NotFoundError(
                    f"{found_kind} {parsed.name!r} has no tag {parsed.tag!r}",
                    hint=f"its tags: {tags}",
                )
            assert parsed.digest_prefix is not None
            return self._by_digest(found_kind, parsed.name, parsed.digest_prefix, stored)

    def _by_digest(
        self, kind: Kind, name: str, prefix: str, stored: builtins.list[_Stored]
    ) -> Manifest:
        matches: dict[str, list[Manifest]] = {}
        for item in stored:
            manifest = self._load(item)
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

    def _name_hint(self, name: str) -> str:
        names = sorted({s.name for s in self._scan()}) if self.manifests_dir.is_dir() else []
        close = difflib.get_close_matches(name, names, n=3)
        if close:
            return "did you mean " + " or ".join(repr(c) for c in close) + "?"
        return "see `dv list`"

    def list(self, kind: Kind | None = None) -> builtins.list[Manifest]:
        """Every (name, tag), sorted by name then tag. Unreadable manifests are skipped
        (`verify` names them)."""
        if kind is not None:
            check_kind(kind)
        result: builtins.list[Manifest] = []
        with self._reading():
            for stored in self._scan(kind):
                if stored.kind not in KINDS:
                    continue
                with contextlib.suppress(RegistryError):
                    result.append(self._load(stored))
        return result

    def tags(self, name: str) -> builtins.list[str]:
        """Every tag of `name`, in display order; empty if there is no such name."""
        check_name(name)
        with self._reading():
            return [s.tag for kind in KINDS for s in self._scan(kind, name)]

    def tags_for(self, manifest: Manifest) -> builtins.list[str]:
        """Every tag of the manifest's name whose content is this manifest (e.g. v2 and latest)."""
        with self._reading():
            return [
                s.tag
                for s in self._scan(manifest.kind, manifest.name)
                if _file_digest(s.path) == manifest.digest
            ]

    def blob_path(self, digest: str) -> Path:
        """Path of a stored blob. Treat it as read-only: blobs are shared between tags."""
        hex_digest = check_digest(digest)
        path = self.blobs_dir / f"sha256-{hex_digest}"
        if not path.is_file():
            raise NotFoundError(f"blob {digest} is not in the registry", hint="run `dv verify`")
        return path

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
                raise RegistryError(
                    f"two files of one {name} entry have the same name: {filenames}"
                )
        with self._writing():
            self._check_namespace(name, kind)
            version = 1 + max(
                (version_number(s.tag) or 0 for s in self._scan(kind, name)), default=0
            )
            version_tag = f"v{version}"
            ops: builtins.list[journal.Op] = []
            for tag, new in checkpoints.items():
                manifest = self._build_manifest(
                    kind, name, tag, created, new, self._store_files(new)
                )
                ops.append(self._write_op(manifest))
            result = self._build_manifest(
                kind, name, version_tag, created, entry, self._store_files(entry)
            )
            ops.append(self._write_op(result))
            ops.append(self._write_op(result.with_tag(LATEST)))
            fsync_dir(self.blobs_dir)  # the blobs are durable before anything references them
            journal.commit(self.home, ops)
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
            raise RegistryError(
                f"invalid manifest for {name}:{tag}: {describe_validation_error(exc)}"
            ) from None

    def _store_files(self, new: NewEntry) -> builtins.list[FileEntry]:
        entries: builtins.list[FileEntry] = []
        for new_file in new.files:
            check_filename(new_file.filename)
            check_media_type(new_file.media_type)
            what = f"file {new_file.filename!r} ({new_file.role})"
            if isinstance(new_file.data, bytes | bytearray | memoryview):
                digest, size = self._store_blob(
                    io.BytesIO(bytes(new_file.data)), new_file.media_type, what
                )
            else:
                source = Path(new_file.data)
                if not source.is_file():
                    raise NotFoundError(f"no such file: {source}")
                with source.open("rb") as stream:
                    digest, size = self._store_blob(stream, new_file.media_type, what)
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

    def _store_blob(self, source: IO[bytes], media_type: str | None, what: str) -> tuple[str, int]:
        """Copy `source` into the blob store (checking it is `media_type`); returns (digest, size).

        The caller holds the write lock and fsyncs the blobs directory once before committing a
        manifest that references the blob. A blob already stored is kept if it re-hashes to its
        name; if it was damaged, the new copy replaces it, so storing the content again heals it.
        """
        tmp = tmp_path_for(self.blobs_dir, "blob")
        try:
            with tmp.open("x+b") as target:
                digest, size = copy_hashing(source, target)
                if media_type is not None:
                    check_stream(target, size, media_type, what)
                final = self.blobs_dir / f"sha256-{check_digest(digest)}"
                if final.is_file() and hash_file(final) == (digest, size):
                    tmp.unlink()
                    return digest, size
                target.flush()
                os.fsync(target.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest, size

    def _manifest_relpath(self, kind: str, name: str, tag: str) -> str:
        return f"manifests/{kind}/{name}/{tag}.json"

    def _write_op(self, manifest: Manifest) -> journal.Op:
        return journal.Op(
            "write",
            self._manifest_relpath(manifest.kind, manifest.name, manifest.tag),
            encode_manifest(manifest),
        )

    def _check_namespace(self, name: str, kind: Kind) -> None:
        for other in self._kinds_of(name):
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
        with self._writing() if not dry_run else self._reading():
            targets: dict[str, _Stored] = {}
            for parsed in parsed_refs:
                for stored in self._removal_targets(parsed):
                    targets.setdefault(stored.ref, stored)
            if not dry_run:
                journal.commit(
                    self.home,
                    [
                        journal.Op("delete", self._manifest_relpath(s.kind, s.name, s.tag))
                        for s in targets.values()
                    ],
                )
        return builtins.list(targets)

    def _removal_targets(self, parsed: Ref) -> builtins.list[_Stored]:
        kinds = self._kinds_of(parsed.name)
        if not kinds:
            raise NotFoundError(
                f"no subject or motion named {parsed.name!r}", hint=self._name_hint(parsed.name)
            )
        stored = [s for kind in kinds for s in self._scan(kind, parsed.name)]
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
        return [s for s in stored if _file_digest(s.path) == wanted]

    def tag(self, src_ref: str, new_ref: str) -> Manifest:
        """Point `new_ref` (`name:tag`; a bare name means name:latest) at the content of `src_ref`.

        An existing tag is moved (e.g. `latest` back to `v1`); version tags `vN` are made only by
        `add_version` and never moved. Tagging under another name copies the entry to that name.
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
        with self._writing():
            source = self.resolve(src_ref)
            self._check_namespace(target.name, source.kind)
            if target.name == source.name:
                new = source.with_tag(target.tag)
                data = self._manifest_path(source).read_bytes()
            else:
                new = source.model_copy(update={"name": target.name, "tag": target.tag})
                data = encode_manifest(new)
            journal.commit(
                self.home,
                [journal.Op("write", self._manifest_relpath(new.kind, new.name, new.tag), data)],
            )
            new._stored_digest = sha256_digest(data)
        return new

    def _manifest_path(self, manifest: Manifest) -> Path:
        return self.home / self._manifest_relpath(manifest.kind, manifest.name, manifest.tag)

    def manifest_bytes(self, manifest: Manifest) -> bytes:
        """The stored bytes of a manifest (what its digest is the sha256 of)."""
        with self._reading():
            try:
                return self._manifest_path(manifest).read_bytes()
            except FileNotFoundError:
                raise NotFoundError(f"{manifest.ref} is not in the registry") from None

    def export(
        self, ref: str, path: Path | str, *, overwrite: bool = False
    ) -> builtins.list[Manifest]:
        """Write `ref` and its blobs to one `.dvpack` file. A bare name exports every tag of it."""
        from dv_registry.archive import export_pack

        return export_pack(self, ref, Path(path), overwrite=overwrite)

    def import_(self, path: Path | str) -> builtins.list[Manifest]:
        """Add the entries of a `.dvpack` file; all are checked before anything is written."""
        from dv_registry.archive import import_pack

        return import_pack(self, Path(path))

    # ------------------------------------------------------------------ maintenance

    def verify(self) -> builtins.list[Problem]:
        """Re-hash every blob a manifest references and check every manifest; [] means healthy."""
        problems: builtins.list[Problem] = []
        blob_state: dict[str, str | None] = {}  # digest -> None if sound, else what is wrong
        with self._reading():
            names: dict[str, set[str]] = {}
            for stored in self._scan():
                relpath = str(stored.path.relative_to(self.home))
                if stored.kind not in KINDS:
                    problems.append(Problem(relpath, f"unknown kind directory {stored.kind!r}"))
                    continue
                names.setdefault(stored.name, set()).add(stored.kind)
                try:
                    check_name(stored.name)
                    check_tag(stored.tag)
                    manifest = self._load(stored)
                except RegistryError as exc:
                    problems.append(Problem(relpath, str(exc), stored.ref))
                    continue
                for entry in manifest.files:
                    if entry.digest not in blob_state:
                        blob_state[entry.digest] = self._check_blob(entry.digest, entry.size)
                    state = blob_state[entry.digest]
                    if state is not None:
                        problems.append(
                            Problem(
                                f"blobs/sha256-{entry.digest.removeprefix('sha256:')}",
                                f"file {entry.filename!r} ({entry.role}): {state}",
                                stored.ref,
                            )
                        )
            for name, kinds in sorted(names.items()):
                if len(kinds) > 1:
                    problems.append(
                        Problem(
                            f"manifests/*/{name}",
                            f"{name!r} is both a subject and a motion",
                            name,
                        )
                    )
        return problems

    def _check_blob(self, digest: str, size: int) -> str | None:
        path = self.blobs_dir / f"sha256-{check_digest(digest)}"
        try:
            actual_digest, actual_size = hash_file(path)
        except FileNotFoundError:
            return "its blob is missing"
        if actual_size != size:
            return f"its blob is damaged ({actual_size} bytes, expected {size})"
        if actual_digest != digest:
            return "its blob is damaged (its sha256 does not match)"
        return None

    def prune(self, dry_run: bool = False) -> PruneReport:
        """Remove blobs no manifest references and the leftovers of interrupted writes."""
        if not self.home.is_dir():
            return PruneReport(dry_run=dry_run, blobs=[], leftovers=[])
        with self._writing():
            referenced = self._referenced_digests()
            blobs, leftovers, empty_dirs = self._garbage(referenced)
            if not dry_run:
                for item in [*blobs, *leftovers]:
                    remove_file(self.home / item.path)
                for directory in empty_dirs:
                    with contextlib.suppress(OSError):
                        directory.rmdir()
                        fsync_dir(directory.parent)
        return PruneReport(dry_run=dry_run, blobs=blobs, leftovers=leftovers)

    def _referenced_digests(self) -> set[str]:
        """Digests any manifest file mentions, read leniently so that a manifest this dv cannot
        fully parse (a newer schema) still keeps its blobs."""
        referenced: set[str] = set()
        for stored in self._scan():
            try:
                document = json.loads(stored.path.read_bytes().decode("utf-8"))
                files = document["files"]
                referenced.update(str(item["digest"]) for item in files)
            except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
                raise RegistryError(
                    f"{stored.path.relative_to(self.home)} is unreadable ({exc}); pruning could "
                    "remove blobs it needs",
                    hint=f"fix it or remove it with `dv rm {stored.ref}`, then prune",
                ) from None
        return referenced

    def _garbage(
        self, referenced: set[str]
    ) -> tuple[builtins.list[PrunedItem], builtins.list[PrunedItem], builtins.list[Path]]:
        blobs: builtins.list[PrunedItem] = []
        leftovers: builtins.list[PrunedItem] = []
        for filename in _list_dir(self.blobs_dir):
            path = self.blobs_dir / filename
            if is_tmp_name(filename):
                leftovers.append(self._item(path))
            elif filename.startswith("sha256-") and "sha256:" + filename[7:] not in referenced:
                blobs.append(self._item(path, digest="sha256:" + filename[7:]))
        for filename in _list_dir(self.home):
            if is_tmp_name(filename):
                leftovers.append(self._item(self.home / filename))
        empty_dirs: builtins.list[Path] = []
        for kind in _list_dir(self.manifests_dir):
            for name in _list_dir(self.manifests_dir / kind):
                name_dir = self.manifests_dir / kind / name
                contents = _list_dir(name_dir)
                for filename in contents:
                    if is_tmp_name(filename):
                        leftovers.append(self._item(name_dir / filename))
                if all(is_tmp_name(f) for f in contents):
                    empty_dirs.append(name_dir)
        return blobs, leftovers, empty_dirs

    def _item(self, path: Path, digest: str | None = None) -> PrunedItem:
        try:
            size = path.lstat().st_size
        except FileNotFoundError:
            size = 0
        return PrunedItem(path=str(path.relative_to(self.home)), size=size, digest=digest)

    def du(self) -> Usage:
        """Disk usage: blobs, manifests, per name, and what `prune` would free."""
        with self._reading():
            blob_sizes: dict[str, int] = {}
            leftover_bytes = 0
            for filename in _list_dir(self.blobs_dir):
                size = _size(self.blobs_dir / filename)
                if filename.startswith("sha256-"):
                    blob_sizes["sha256:" + filename[7:]] = size
                elif is_tmp_name(filename):
                    leftover_bytes += size
            manifest_bytes = 0
            manifest_count = 0
            per_name: dict[tuple[str, str], tuple[list[str], set[str]]] = {}
            referenced: set[str] = set()
            for path in walk_files(self.manifests_dir):
                if is_tmp_name(path.name):
                    leftover_bytes += _size(path)
            for filename in _list_dir(self.home):
                if is_tmp_name(filename):
                    leftover_bytes += _size(self.home / filename)
            for stored in self._scan():
                manifest_count += 1
                manifest_bytes += _size(stored.path)
                tags, digests = per_name.setdefault((stored.kind, stored.name), ([], set()))
                tags.append(stored.tag)
                try:
                    manifest = self._load(stored)
                except RegistryError:
                    continue
                digests.update(entry.digest for entry in manifest.files)
                referenced.update(digests)
            unreferenced = {d: s for d, s in blob_sizes.items() if d not in referenced}
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
            home=self.home,
            blob_count=len(blob_sizes),
            blob_bytes=sum(blob_sizes.values()),
            manifest_count=manifest_count,
            manifest_bytes=manifest_bytes,
            unreferenced_blob_count=len(unreferenced),
            unreferenced_bytes=sum(unreferenced.values()),
            leftover_bytes=leftover_bytes,
            names=names,
        )


def _list_dir(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _file_digest(path: Path) -> str | None:
    try:
        return sha256_digest(path.read_bytes())
    except FileNotFoundError:
        return None
