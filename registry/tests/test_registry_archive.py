"""`.dvpack` export and import, including archives built to attack the importer."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dvreg_testutil import motion_entry, safetensors_bytes, snapshot, subject_entry

from dv_registry import NewerSchemaError, NotFoundError, Registry, RegistryError


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file(role: str, filename: str, data: bytes, media_type: str) -> dict[str, Any]:
    return {
        "role": role,
        "filename": filename,
        "digest": _digest(data),
        "size": len(data),
        "media_type": media_type,
    }


def _document(files: list[dict[str, Any]], name: str = "evil", kind: str = "subject") -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": kind,
        "name": name,
        "created": "2024-05-01T00:00:00Z",
        "backbone": {"backbone": "tiny"},
        "files": files,
    }


def _index(*documents: dict[str, Any], version: int = 1) -> bytes:
    return json.dumps(
        {
            "dvpack": version,
            "manifests": [
                {"kind": d["kind"], "name": d["name"], "tag": f"v{i}", "manifest": d}
                for i, d in enumerate(documents, start=1)
            ],
        }
    ).encode()


def _write_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _write_raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _blob_member(data: bytes) -> tuple[str, bytes]:
    return (f"blobs/sha256-{hashlib.sha256(data).hexdigest()}", data)


def _link(name: str, kind: bytes, target: str = "/etc/passwd") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


ADAPTER = safetensors_bytes(7)
GOOD_FILES = [_file("adapter", "adapter.safetensors", ADAPTER, "application/vnd.dv.safetensors")]
PICKLE = pickle.dumps({"weights": [1.0, 2.0]})
NOT_SAFETENSORS_FILES = [_file("adapter", "adapter.safetensors", PICKLE, "application/vnd.dv.safetensors")]
UNKNOWN_TYPE_FILES = [_file("adapter", "adapter.pkl", PICKLE, "application/x-python-pickle")]

# Each builds a hostile .dvpack in the given directory; the message is what the refusal says.
HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "path traversal": (
        lambda d: _write_tar(d / "p.dvpack", [("manifest.json", _index(_document(GOOD_FILES))), ("../escaped", b"x")]),
        "points outside the archive",
    ),
    "path traversal inside blobs": (
        lambda d: _write_tar(d / "p.dvpack", [("blobs/../../escaped", b"x")]),
        "points outside the archive",
    ),
    "absolute path": (
        lambda d: _write_tar(d / "p.dvpack", [("/tmp/dv-absolute-escape", b"x")]),
        "absolute path",
    ),
    "symlink": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                ("manifest.json", _index(_document(GOOD_FILES))),
                _link(_blob_member(ADAPTER)[0], tarfile.SYMTYPE),
            ],
        ),
        "is a link",
    ),
    "hardlink": (
        lambda d: _write_tar(d / "p.dvpack", [_link("manifest.json", tarfile.LNKTYPE)]),
        "is a link",
    ),
    "device": (
        lambda d: _write_tar(d / "p.dvpack", [_link("manifest.json", tarfile.CHRTYPE, "")]),
        "not a regular file",
    ),
    "fifo": (
        lambda d: _write_tar(d / "p.dvpack", [_link("manifest.json", tarfile.FIFOTYPE, "")]),
        "not a regular file",
    ),
    "wrong digest": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                ("manifest.json", _index(_document(GOOD_FILES))),
                (_blob_member(ADAPTER)[0], safetensors_bytes(8)),
            ],
        ),
        "does not match its digest",
    ),
    "pickle renamed .safetensors": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [("manifest.json", _index(_document(NOT_SAFETENSORS_FILES))), _blob_member(PICKLE)],
        ),
        "is not a safetensors file",
    ),
    "unknown media type": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [("manifest.json", _index(_document(UNKNOWN_TYPE_FILES))), _blob_member(PICKLE)],
        ),
        "unsupported media type",
    ),
    "missing blob": (
        lambda d: _write_tar(d / "p.dvpack", [("manifest.json", _index(_document(GOOD_FILES)))]),
        "not in the archive",
    ),
    "size mismatch": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                ("manifest.json", _index(_document([{**GOOD_FILES[0], "size": 1}]))),
                _blob_member(ADAPTER),
            ],
        ),
        "its manifest says 1",
    ),
    "filename with a directory": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                (
                    "manifest.json",
                    _index(_document([{**GOOD_FILES[0], "filename": "../../x.safetensors"}])),
                ),
                _blob_member(ADAPTER),
            ],
        ),
        "invalid file name",
    ),
    "bad name": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                ("manifest.json", _index(_document(GOOD_FILES, name="../evil"))),
                _blob_member(ADAPTER),
            ],
        ),
        "invalid name",
    ),
    "unexpected member": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                ("manifest.json", _index(_document(GOOD_FILES))),
                _blob_member(ADAPTER),
                ("run.sh", b"rm -rf /"),
            ],
        ),
        "unexpected member",
    ),
    "duplicate member": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                ("manifest.json", _index(_document(GOOD_FILES))),
                _blob_member(ADAPTER),
                _blob_member(ADAPTER),
            ],
        ),
        "appears twice",
    ),
    "no manifest": (
        lambda d: _write_tar(d / "p.dvpack", [_blob_member(ADAPTER)]),
        "has no manifest.json",
    ),
    "manifest not json": (
        lambda d: _write_tar(d / "p.dvpack", [("manifest.json", b"\x80\x04not json")]),
        "not valid JSON",
    ),
    "not a tar": (
        lambda d: _write_raw(d / "p.dvpack", PICKLE),
        "not a readable .dvpack",
    ),
    "truncated gzip": (
        lambda d: _write_raw(
            d / "p.dvpack",
            _write_tar(
                d / "whole.dvpack.gz",
                [("manifest.json", _index(_document(GOOD_FILES))), _blob_member(ADAPTER)],
                mode="w:gz",
            ).read_bytes()[:-30],
        ),
        "not a readable .dvpack",
    ),
    "newer manifest schema": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                ("manifest.json", _index({**_document(GOOD_FILES), "schema_version": 9})),
                _blob_member(ADAPTER),
            ],
        ),
        "written by a newer dv",
    ),
    "newer pack format": (
        lambda d: _write_tar(d / "p.dvpack", [("manifest.json", _index(_document(GOOD_FILES), version=2))]),
        "written by a newer dv",
    ),
    "one name, two kinds": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                (
                    "manifest.json",
                    _index(_document(GOOD_FILES), _document(GOOD_FILES, kind="motion")),
                ),
                _blob_member(ADAPTER),
            ],
        ),
        "both a subject and a motion",
    ),
    "manifest digest mismatch": (
        lambda d: _write_tar(
            d / "p.dvpack",
            [
                (
                    "manifest.json",
                    json.dumps(
                        {
                            "dvpack": 1,
                            "manifests": [
                                {
                                    "kind": "subject",
                                    "name": "evil",
                                    "tag": "v1",
                                    "digest": "sha256:" + "0" * 64,
                                    "manifest": _document(GOOD_FILES),
                                }
                            ],
                        }
                    ).encode(),
                ),
                _blob_member(ADAPTER),
            ],
        ),
        "does not match its digest",
    ),
}


@pytest.fixture
def populated(registry: Registry) -> Registry:
    registry.add_version("subject", "dog", subject_entry(1), checkpoints={"step5": subject_entry(2)})
    registry.add_version("subject", "dog", subject_entry(3))
    registry.add_version("motion", "walk", motion_entry(4))
    return registry


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_change_nothing(populated: Registry, tmp_path: Path, case: str) -> None:
    build, message = HOSTILE[case]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    pack = build(scratch)
    before = snapshot(populated.home)
    around_before = snapshot(tmp_path)
    with pytest.raises(RegistryError) as info:
        populated.import_(pack)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert snapshot(populated.home) == before
    assert snapshot(tmp_path) == around_before
    for escaped in (
        Path("/tmp/dv-absolute-escape"),
        Path.cwd() / "escaped",
        Path(tempfile.gettempdir()) / "escaped",
    ):
        assert not escaped.exists()
    assert populated.verify() == []


def test_hostile_archive_into_an_empty_home_writes_nothing(registry: Registry, tmp_path: Path) -> None:
    pack = HOSTILE["pickle renamed .safetensors"][0](tmp_path)
    with pytest.raises(RegistryError):
        registry.import_(pack)
    assert snapshot(registry.home) == {}


def test_a_valid_handmade_pack_imports(registry: Registry, tmp_path: Path) -> None:
    pack = _write_tar(
        tmp_path / "ok.dvpack",
        [("manifest.json", _index(_document(GOOD_FILES))), _blob_member(ADAPTER)],
    )
    (manifest,) = registry.import_(pack)
    assert manifest.ref == "evil:v1"
    assert registry.read_file(registry.resolve("evil:v1"), "adapter") == ADAPTER


def test_missing_file(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file"):
        registry.import_(tmp_path / "missing.dvpack")


def test_newer_pack_error_type(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(NewerSchemaError, match="upgrade"):
        registry.import_(HOSTILE["newer pack format"][0](tmp_path))


@pytest.mark.real_fsync
@pytest.mark.parametrize("filename", ["dog.dvpack", "dog.dvpack.gz"])
def test_export_import_round_trip(populated: Registry, tmp_path: Path, filename: str) -> None:
    pack = tmp_path / filename
    exported = populated.export("dog", pack)
    assert [m.ref for m in exported] == ["dog:latest", "dog:v1", "dog:v2", "dog:step5"]
    other = Registry(tmp_path / "other-home")
    imported = other.import_(pack)
    assert [m.ref for m in imported] == [m.ref for m in exported]
    # Same bytes, so the same digests, on the other machine.
    assert [m.digest for m in other.list()] == [m.digest for m in exported]
    assert other.verify() == []
    assert other.read_file(other.resolve("dog:step5"), "adapter") == safetensors_bytes(2)
    # Importing again is a no-op, not a conflict.
    before = snapshot(other.home)
    other.import_(pack)
    assert snapshot(other.home) == before


def test_export_is_reproducible(populated: Registry, tmp_path: Path) -> None:
    populated.export("dog:v1", tmp_path / "a.dvpack")
    populated.export("dog:v1", tmp_path / "b.dvpack")
    assert (tmp_path / "a.dvpack").read_bytes() == (tmp_path / "b.dvpack").read_bytes()
    with tarfile.open(tmp_path / "a.dvpack") as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json" and all(n.startswith("blobs/sha256-") for n in names[1:])


def test_export_one_tag_and_refusals(populated: Registry, tmp_path: Path) -> None:
    assert [m.ref for m in populated.export("walk:v1", tmp_path / "w.dvpack")] == ["walk:v1"]
    with pytest.raises(RegistryError, match="already exists"):
        populated.export("walk:v1", tmp_path / "w.dvpack")
    populated.export("walk:latest", tmp_path / "w.dvpack", overwrite=True)
    with pytest.raises(NotFoundError):
        populated.export("nope", tmp_path / "n.dvpack")
    with pytest.raises(NotFoundError, match="no such directory"):
        populated.export("walk", tmp_path / "no" / "dir.dvpack")
    assert not (tmp_path / "n.dvpack").exists()


def test_import_conflicts(populated: Registry, tmp_path: Path) -> None:
    other = Registry(tmp_path / "other-home")
    other.add_version("motion", "dog", motion_entry(1))  # dog is a motion over there
    other.add_version("subject", "walk", subject_entry(1))
    populated.export("dog", tmp_path / "dog.dvpack")
    before = snapshot(other.home)
    with pytest.raises(RegistryError, match="'dog' is already a motion"):
        other.import_(tmp_path / "dog.dvpack")
    assert snapshot(other.home) == before

    # Same kind, same tag, different content: refused; identical content: fine.
    third = Registry(tmp_path / "third-home")
    third.add_version("subject", "dog", subject_entry(99))
    before = snapshot(third.home)
    with pytest.raises(RegistryError, match="dog:latest already exists with different content"):
        third.import_(tmp_path / "dog.dvpack")
    assert snapshot(third.home) == before
    populated.export("dog:step5", tmp_path / "step.dvpack")
    (step,) = third.import_(tmp_path / "step.dvpack")
    assert step.ref == "dog:step5"
    assert third.tags("dog") == ["latest", "v1", "step5"]
