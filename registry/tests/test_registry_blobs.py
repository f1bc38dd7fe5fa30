"""The blob store and the commit helper on their own, and the shape of the package."""

from __future__ import annotations

import ast
import hashlib
import io
from pathlib import Path

import pytest
from dvreg_testutil import safetensors_bytes

import dv_registry
from dv_registry import SAFETENSORS, BlobStore, NotFoundError, Registry, RegistryError
from dv_registry.change import writing
from dv_registry.fsutil import TMP_PREFIX
from dv_registry.lock import RegistryLock


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_names_a_blob_by_its_sha256(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = safetensors_bytes(3)
    digest, size = blobs.put(data, media_type=SAFETENSORS)
    assert (digest, size) == (_digest(data), len(data))
    assert blobs.path(digest) == tmp_path / "blobs" / f"sha256-{digest.removeprefix('sha256:')}"
    assert blobs.path(digest).read_bytes() == data
    # The same content again (from a stream this time) is the same blob.
    assert blobs.put(io.BytesIO(data)) == (digest, size)
    blobs.sync()
    assert [b.digest for b in blobs.files()] == [digest]
    assert blobs.garbage(set()).leftovers == []


def test_put_refuses_content_that_is_not_its_media_type(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    with pytest.raises(RegistryError, match="adapter"):
        blobs.put(b"\x80\x04not safetensors", media_type=SAFETENSORS, what="adapter")
    assert list((tmp_path / "blobs").iterdir()) == []  # not even a temporary file


def test_check_finds_damage_and_put_heals_it(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = safetensors_bytes(4)
    digest, size = blobs.put(data)
    assert blobs.check(digest, size) is None
    assert blobs.check(digest, size + 1) == f"its blob is damaged ({size} bytes, expected {size + 1})"
    blobs.path(digest).write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert blobs.check(digest, size) == "its blob is damaged (its sha256 does not match)"
    blobs.put(data)
    assert blobs.check(digest, size) is None
    blobs.path(digest).unlink()
    assert blobs.check(digest, size) == "its blob is missing"


def test_path_of_an_unknown_or_malformed_digest(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    with pytest.raises(NotFoundError, match="not in the registry"):
        blobs.path(_digest(b"nothing"))
    with pytest.raises(RegistryError):
        blobs.path("sha256:../../etc/passwd")


def test_garbage_is_what_nobody_uses_and_leftovers(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    kept, _ = blobs.put(b"kept")
    dropped, _ = blobs.put(b"dropped")
    leftover = tmp_path / "blobs" / f"{TMP_PREFIX}blob-1-abc"
    leftover.write_bytes(b"partial")
    garbage = blobs.garbage({kept})
    assert [(b.digest, b.size) for b in garbage.blobs] == [(dropped, len(b"dropped"))]
    assert [(b.path, b.digest, b.size) for b in garbage.leftovers] == [(leftover, None, 7)]
    assert sorted(b.digest for b in blobs.files() if b.digest) == sorted([kept, dropped])


def test_a_change_that_raises_commits_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    blobs = BlobStore(home / "blobs")
    lock = RegistryLock(home / "lock", 10)
    with pytest.raises(RuntimeError), writing(home, lock, blobs) as change:
        digest, _ = change.put_blob(b"orphan")
        change.write("manifests/motion/walk/v1.json", b"{}")
        raise RuntimeError("changed my mind")
    assert not (home / "manifests" / "motion").exists()
    assert not (home / "journal.json").exists()
    assert [b.digest for b in blobs.garbage(set()).blobs] == [digest]  # for `prune`
    assert lock.depth == 0


def test_registry_exposes_its_blob_store(registry: Registry) -> None:
    from dvreg_testutil import motion_entry

    manifest = registry.add_version("motion", "walk", motion_entry(1))
    entry = manifest.file("adapter")
    assert registry.blobs.path(entry.digest) == registry.blob_path(entry.digest)
    assert registry.blobs.check(entry.digest, entry.size) is None


PACKAGE = Path(dv_registry.__file__).parent


def _module(name: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))


def test_modules_use_each_other_through_public_names_only() -> None:
    """No `other._private` across modules, no import cycle hidden behind TYPE_CHECKING, and only
    the package itself imports the Registry's module (it sits on top)."""
    for path in sorted(PACKAGE.glob("*.py")):
        tree = _module(path.stem)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                assert node.id != "TYPE_CHECKING", path.name
            if isinstance(node, ast.ImportFrom) and path.stem != "__init__":
                assert node.module != "dv_registry.store", f"{path.name} imports store"
            if path.stem == "manifest":
                continue  # Manifest's own private digest cache, set by its own module
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                base = node.value
                private_of_self = isinstance(base, ast.Name) and base.id in ("self", "cls")
                assert private_of_self or node.attr.startswith("__"), (
                    f"{path.name}:{node.lineno} reaches into {ast.unparse(node)}"
                )
