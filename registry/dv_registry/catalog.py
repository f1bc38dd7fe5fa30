"""Names and tags on disk: `manifests/<kind>/<name>/<tag>.json`, one manifest file per tag.

`Catalog.scan` lists the manifest files without reading them (so a damaged one is still
found, by `verify` and `rm`); `Catalog.load` reads and checks one. Nothing here locks or
writes: the Registry does both, through a Change.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from dv_registry.errors import NotFoundError, RegistryError
from dv_registry.fsutil import is_tmp_name, list_dir
from dv_registry.manifest import KINDS, Kind, Manifest, decode_manifest, sha256_digest
from dv_registry.refs import LATEST, version_number


@dataclass(frozen=True)
class StoredManifest:
    """A manifest file found on disk, not yet parsed."""

    kind: str  # the directory it is in: a Kind, unless the registry is damaged
    name: str
    tag: str
    path: Path

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    def read_digest(self) -> str | None:
        """sha256 of the file's bytes; None if it has been removed meanwhile."""
        try:
            return sha256_digest(self.path.read_bytes())
        except FileNotFoundError:
            return None


def tag_sort_key(tag: str) -> tuple[int, int, str]:
    """latest, then v1, v2, ... in numeric order, then every other tag alphabetically."""
    if tag == LATEST:
        return (0, 0, tag)
    number = version_number(tag)
    if number is not None:
        return (1, number, tag)
    return (2, 0, tag)


def manifest_relpath(kind: str, name: str, tag: str) -> str:
    """Where one tag's manifest is, relative to the home (the form the journal takes)."""
    return f"manifests/{kind}/{name}/{tag}.json"


class Catalog:
    """The manifest files under one home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.directory = home / "manifests"

    def path(self, kind: str, name: str, tag: str) -> Path:
        return self.home / manifest_relpath(kind, name, tag)

    def scan(self, kind: str | None = None, name: str | None = None) -> list[StoredManifest]:
        """Manifest files on disk, sorted by name then tag. Temporary files are skipped."""
        found: list[StoredManifest] = []
        kinds = [kind] if kind is not None else list_dir(self.directory)
        for kind_name in kinds:
            kind_dir = self.directory / kind_name
            names = [name] if name is not None else list_dir(kind_dir)
            for entry_name in names:
                name_dir = kind_dir / entry_name
                for filename in list_dir(name_dir):
                    if is_tmp_name(filename) or not filename.endswith(".json"):
                        continue
                    path = name_dir / filename
                    if path.is_file():
                        tag = filename.removesuffix(".json")
                        found.append(StoredManifest(kind_name, entry_name, tag, path))
        found.sort(key=lambda s: (s.name, tag_sort_key(s.tag), s.kind))
        return found

    def kinds_of(self, name: str) -> list[Kind]:
        """The kinds `name` has tags of: none, one, or (in a damaged registry) both."""
        return [kind for kind in KINDS if self.scan(kind, name)]

    def load(self, stored: StoredManifest) -> Manifest:
        """Read and check one manifest file."""
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

    def name_hint(self, name: str) -> str:
        """A hint for an unknown name: the closest names there are."""
        names = sorted({s.name for s in self.scan()}) if self.directory.is_dir() else []
        close = difflib.get_close_matches(name, names, n=3)
        if close:
            return "did you mean " + " or ".join(repr(c) for c in close) + "?"
        return "see `dv list`"
