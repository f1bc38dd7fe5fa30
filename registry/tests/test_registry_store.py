"""The store: refs, names, versioning, tags, removal, verify, prune, crash recovery."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import pytest
from dvreg_testutil import motion_entry, safetensors_bytes, snapshot, subject_entry

import dv_registry
from dv_registry import (
    MEDIA_TYPES,
    SAFETENSORS,
    Manifest,
    NewEntry,
    NewerSchemaError,
    NewFile,
    NotFoundError,
    Registry,
    RegistryError,
    parse_ref,
    store,
)
from dv_registry.fsutil import TMP_PREFIX


def test_never_imports_heavy_packages() -> None:
    import subprocess

    code = (
        "import sys, dv_registry, dv_registry.archive;"
        "bad = {'torch', 'numpy', 'dreamvideo_cli'} & set(sys.modules); print(sorted(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_public_api_names() -> None:
    for name in ("Registry", "Manifest", "FileEntry", "NewFile", "NewEntry", "RegistryError",
                 "NotFoundError", "Kind", "MEDIA_TYPES"):  # fmt: skip
        assert name in dv_registry.__all__
    assert {
        "application/vnd.dv.safetensors",
        "image/png",
        "image/jpeg",
        "application/json",
    } == MEDIA_TYPES


def test_home_defaults_to_env(home: Path) -> None:
    assert Registry().home == home
    assert Registry(home / "other").home == home / "other"


def test_error_str_has_hint() -> None:
    exc = RegistryError("bad thing", hint="do this")
    assert str(exc) == "bad thing (do this)"
    assert exc.exit_code == 1
    assert str(RegistryError("plain")) == "plain"


# ---------------------------------------------------------------- names and refs


@pytest.mark.parametrize("name", ["dog", "d", "0dog", "my-dog_2", "a" * 64])
def test_valid_names(registry: Registry, name: str) -> None:
    assert registry.add_version("subject", name, subject_entry()).name == name


@pytest.mark.parametrize("name", ["", "Dog", "-dog", "_dog", "dog.x", "dog/cat", "..", "a" * 65, "dög"])
def test_invalid_names_are_refused(registry: Registry, name: str) -> None:
    with pytest.raises(RegistryError, match="invalid name"):
        registry.add_version("subject", name, subject_entry())
    assert registry.list() == []


def test_uppercase_name_hint() -> None:
    with pytest.raises(RegistryError) as info:
        parse_ref("Dog")
    assert "lowercase" in str(info.value) and "'dog'" in str(info.value)


@pytest.mark.parametrize("tag", ["-x", ".x", "X", "a b", "a" * 65, "a/b"])
def test_invalid_tags_are_refused(tag: str) -> None:
    with pytest.raises(RegistryError, match="tag"):
        parse_ref(f"dog:{tag}")


def test_parse_ref_forms() -> None:
    assert parse_ref("dog").tag == "latest" and not parse_ref("dog").explicit
    assert parse_ref("dog:v2").tag == "v2"
    assert parse_ref("dog:step.500").tag == "step.500"
    assert parse_ref("dog@sha256:ABCDEF12").digest_prefix == "abcdef12"
    for bad in ["dog@sha256:abc", "dog@md5:abcdef", "dog@abcdef", "dog@sha256:xyzxyz"]:
        with pytest.raises(RegistryError):
            parse_ref(bad)


def test_resolve_by_name_tag_and_digest(registry: Registry) -> None:
    v1 = registry.add_version("subject", "dog", subject_entry(1))
    v2 = registry.add_version("subject", "dog", subject_entry(2))
    assert registry.resolve("dog").digest == v2.digest
    assert registry.resolve("dog").tag == "latest"
    assert registry.resolve("dog:v1").digest == v1.digest
    by_digest = registry.resolve("dog@sha256:" + v1.digest.removeprefix("sha256:")[:6])
    assert by_digest.digest == v1.digest and by_digest.tag == "v1"
    # latest and v2 are one content: the digest ref names it by its version.
    assert registry.resolve("dog@" + v2.digest[:20]).tag == "v2"


def test_digest_is_sha256_of_stored_bytes(registry: Registry) -> None:
    import hashlib

    manifest = registry.add_version("subject", "dog", subject_entry())
    stored = (registry.home / "manifests/subject/dog/v1.json").read_bytes()
    assert manifest.digest == "sha256:" + hashlib.sha256(stored).hexdigest()
    assert registry.resolve("dog:v1").digest == manifest.digest
    assert registry.manifest_bytes(manifest) == stored
    # Tags are pointers: latest is the same bytes as v1.
    assert (registry.home / "manifests/subject/dog/latest.json").read_bytes() == stored


class FrozenClock(datetime):
    @classmethod
    def now(cls, tz: tzinfo | None = None) -> FrozenClock:
        return cls(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifests record when they were made; a fixed clock makes their digests reproducible."""
    monkeypatch.setattr(store, "datetime", FrozenClock)


@pytest.mark.usefixtures("frozen_clock")
def test_ambiguous_digest_prefix(registry: Registry) -> None:
    import hashlib

    from dv_registry.manifest import encode_manifest

    first = registry.add_version("subject", "dog", subject_entry(description="0"))
    # Find two descriptions whose manifests' digests share 6 hex digits (a birthday search).
    seen: dict[str, str] = {}
    for i in range(1, 200_000):
        candidate = first.model_copy(update={"description": str(i)})
        prefix = hashlib.sha256(encode_manifest(candidate)).hexdigest()[:6]
        if prefix in seen:
            break
        seen[prefix] = str(i)
    a = registry.add_version("subject", "dog", subject_entry(description=seen[prefix]))
    b = registry.add_version("subject", "dog", subject_entry(description=str(i)))
    assert a.digest[:13] == b.digest[:13] == f"sha256:{prefix}" and a.digest != b.digest
    with pytest.raises(RegistryError, match="ambiguous") as info:
        registry.resolve(f"dog@sha256:{prefix}")
    assert "give more hex digits" in str(info.value)
    assert registry.resolve("dog@" + a.digest[:30]).tag == a.tag


def test_resolve_errors_are_clear(registry: Registry) -> None:
    registry.add_version("subject", "dog", subject_entry())
    with pytest.raises(NotFoundError) as info:
        registry.resolve("dgo")
    assert str(info.value) == "no subject or motion named 'dgo' (did you mean 'dog'?)"
    with pytest.raises(NotFoundError, match=r"has no tag 'v9'.*its tags: latest, v1"):
        registry.resolve("dog:v9")
    with pytest.raises(NotFoundError, match="digest starting with 'ffffff'"):
        registry.resolve("dog@sha256:ffffff")
    with pytest.raises(RegistryError, match="'dog' is a subject, not a motion"):
        registry.resolve("dog", kind="motion")


def test_resolve_on_missing_home_creates_nothing(registry: Registry) -> None:
    with pytest.raises(NotFoundError):
        registry.resolve("dog")
    assert registry.list() == []
    assert registry.verify() == []
    assert not registry.home.exists()


# ---------------------------------------------------------------- versioning and namespace


def test_versions_and_latest(registry: Registry) -> None:
    manifests = [registry.add_version("subject", "dog", subject_entry(i)) for i in range(3)]
    assert [m.tag for m in manifests] == ["v1", "v2", "v3"]
    assert registry.tags("dog") == ["latest", "v1", "v2", "v3"]
    assert registry.resolve("dog").digest == manifests[-1].digest
    assert registry.tags_for(registry.resolve("dog")) == ["latest", "v3"]
    # The next number is the next free one after the highest.
    registry.remove("dog:v3")
    assert registry.add_version("subject", "dog", subject_entry(9)).tag == "v3"
    registry.remove("dog:v1")
    assert registry.add_version("subject", "dog", subject_entry(10)).tag == "v4"


def test_checkpoints_are_written_with_the_version(registry: Registry) -> None:
    version = registry.add_version("subject", "dog", subject_entry(1), checkpoints={"step500": subject_entry(5)})
    step = registry.resolve("dog:step500")
    assert version.tag == "v1"
    assert step.created == version.created
    assert registry.read_file(step, "adapter") == safetensors_bytes(5)
    # A later version moves the checkpoint tag along with latest.
    registry.add_version("subject", "dog", subject_entry(2), checkpoints={"step500": subject_entry(7)})
    assert registry.read_file(registry.resolve("dog:step500"), "adapter") == safetensors_bytes(7)
    for reserved in ("latest", "v3"):
        with pytest.raises(RegistryError, match="reserved"):
            registry.add_version("subject", "dog", subject_entry(), checkpoints={reserved: subject_entry()})


def test_one_namespace_across_kinds(registry: Registry) -> None:
    registry.add_version("subject", "dog", subject_entry())
    with pytest.raises(RegistryError, match="'dog' is already a subject"):
        registry.add_version("motion", "dog", motion_entry())
    registry.add_version("motion", "walk", motion_entry())
    with pytest.raises(RegistryError, match="'walk' is already a motion"):
        registry.tag("dog", "walk:x")
    # Once the name is free again it can be the other kind.
    registry.remove("dog")
    assert registry.add_version("motion", "dog", motion_entry()).kind == "motion"


def test_manifest_fields_and_helpers(registry: Registry) -> None:
    manifest = registry.add_version(
        "subject",
        "dog",
        subject_entry(3, metrics={"clip_t": 0.25}, duration_s=12, dataset_digest="sha256:ab"),
    )
    assert manifest.schema_version == 1
    assert manifest.ref == "dog:v1"
    assert manifest.token == "<sks>" and manifest.init_word == "dog"
    assert manifest.metrics == {"clip_t": 0.25}
    assert manifest.duration_s == 12.0
    assert manifest.file("adapter").filename == "identity_adapter.safetensors"
    assert [f.filename for f in manifest.files_with("reference_image")] == ["ref0.png", "ref1.jpg"]
    with pytest.raises(RegistryError, match="2 'reference_image' files"):
        manifest.file("reference_image")
    with pytest.raises(NotFoundError, match="has no 'mask' file"):
        manifest.file("mask")
    assert json.loads(registry.read_file(manifest, "config")) == {"seed": 3}
    assert registry.blob_path(manifest.file("adapter").digest).read_bytes() == safetensors_bytes(3)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "motion"}, "set by the registry"),
        ({"backbone": {}, "bogus": 1}, "bogus"),
        ({"backbone": {}, "metrics": {"x": float("nan")}}, "metrics"),
        ({}, "backbone"),
    ],
)
def test_bad_fields_write_nothing(registry: Registry, fields: dict[str, object], message: str) -> None:
    entry = NewEntry(files=[NewFile("adapter", "a.safetensors", safetensors_bytes(), SAFETENSORS)], fields=fields)
    with pytest.raises(RegistryError, match=message):
        registry.add_version("subject", "dog", entry)
    assert registry.list() == []


@pytest.mark.parametrize(
    ("data", "media_type", "message"),
    [
        (b"\x80\x04\x95pickle", SAFETENSORS, "not a safetensors file"),
        (b"\x08\x00\x00\x00\x00\x00\x00\x00[1,2,3] ", SAFETENSORS, "not a JSON object"),
        (safetensors_bytes()[:-1], SAFETENSORS, "data section"),
        (b"GIF89a", "image/png", "not a PNG"),
        (b"\x89PNG\r\n\x1a\n", "image/jpeg", "not a JPEG"),
        (b"{nope", "application/json", "not valid JSON"),
        (b"x", "application/x-python-pickle", "unsupported media type"),
    ],
)
def test_content_must_match_media_type(registry: Registry, data: bytes, media_type: str, message: str) -> None:
    registry.add_version("subject", "dog", subject_entry())
    entry = NewEntry(files=[NewFile("adapter", "a.bin", data, media_type)], fields={"backbone": {}})
    with pytest.raises(RegistryError, match=message):
        registry.add_version("subject", "dog", entry)
    assert registry.tags("dog") == ["latest", "v1"]


def test_safetensors_layout_checks() -> None:
    from dv_registry.media import check_stream

    def header_file(header: object, data: bytes = b"") -> bytes:
        raw = json.dumps(header).encode()
        return len(raw).to_bytes(8, "little") + raw + data

    import io

    good = header_file(
        {
            "__metadata__": {"a": "b"},
            "w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
        },
        bytes(8),
    )
    check_stream(io.BytesIO(good), len(good), SAFETENSORS, "w")
    bad = [
        header_file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)),
        header_file({"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
        header_file({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)),
        header_file({"__metadata__": {"a": 1}}),
        (2**40).to_bytes(8, "little") + b"{}",
    ]
    for data in bad:
        with pytest.raises(RegistryError, match="not a safetensors file"):
            check_stream(io.BytesIO(data), len(data), SAFETENSORS, "w")


def test_files_from_paths(registry: Registry, tmp_path: Path) -> None:
    source = tmp_path / "adapter.safetensors"
    source.write_bytes(safetensors_bytes(42))
    entry = NewEntry(
        files=[NewFile("adapter", "adapter.safetensors", source, SAFETENSORS)],
        fields={"backbone": {}},
    )
    manifest = registry.add_version("motion", "walk", entry)
    assert registry.read_file(manifest, "adapter") == safetensors_bytes(42)
    missing = NewEntry(
        files=[NewFile("adapter", "a.safetensors", tmp_path / "nope", SAFETENSORS)],
        fields={"backbone": {}},
    )
    with pytest.raises(NotFoundError, match="no such file"):
        registry.add_version("motion", "walk", missing)


@pytest.mark.parametrize("filename", ["../x", "a/b", "", ".."])
def test_filenames_are_plain(registry: Registry, filename: str) -> None:
    entry = NewEntry(
        files=[NewFile("adapter", filename, safetensors_bytes(), SAFETENSORS)],
        fields={"backbone": {}},
    )
    with pytest.raises(RegistryError, match="file name"):
        registry.add_version("subject", "dog", entry)


def test_newer_schema_is_refused_clearly(registry: Registry) -> None:
    registry.add_version("subject", "dog", subject_entry())
    path = registry.home / "manifests/subject/dog/v1.json"
    document = json.loads(path.read_bytes())
    document["schema_version"] = 2
    document["new_field"] = "from the future"
    path.write_text(json.dumps(document))
    with pytest.raises(NewerSchemaError) as info:
        registry.resolve("dog:v1")
    assert "written by a newer dv" in str(info.value) and "upgrade" in str(info.value)
    # Its blobs are still kept by prune, although this dv cannot read it.
    assert registry.prune().blobs == []
    assert any("newer dv" in p.message for p in registry.verify())


def test_manifest_round_trips_through_json() -> None:
    from dv_registry.manifest import decode_manifest, encode_manifest

    manifest = Manifest(
        kind="motion", name="walk", tag="v1", created=datetime(2024, 5, 1, tzinfo=UTC),
        backbone={"backbone": "tiny"}, files=[], metrics={"a": 0.1},
    )  # fmt: skip
    data = encode_manifest(manifest)
    again = decode_manifest(data, tag="latest", where="x")
    assert again.tag == "latest" and again.digest == manifest.digest
    assert encode_manifest(again) == data


# ---------------------------------------------------------------- tag and remove


def test_tag_moves_and_copies(registry: Registry) -> None:
    v1 = registry.add_version("subject", "dog", subject_entry(1))
    registry.add_version("subject", "dog", subject_entry(2))
    good = registry.tag("dog:v1", "dog:good")
    assert good.ref == "dog:good" and good.digest == v1.digest
    rolled_back = registry.tag("dog:v1", "dog")  # a bare name is name:latest
    assert rolled_back.ref == "dog:latest" and registry.resolve("dog").digest == v1.digest
    with pytest.raises(RegistryError, match="stays within its name"):  # issue 31 item 2: no `rex` with dog's token
        registry.tag("dog:v1", "rex:v1-copy")
    assert registry.tags("rex") == []
    with pytest.raises(RegistryError, match="reserved"):
        registry.tag("dog:v1", "dog:v7")
    with pytest.raises(NotFoundError):
        registry.tag("nope", "dog:x")
    assert registry.verify() == []


def test_remove_one_tag_or_everything(registry: Registry) -> None:
    registry.add_version("subject", "dog", subject_entry(1))
    registry.add_version("subject", "dog", subject_entry(2))
    registry.add_version("motion", "walk", motion_entry())
    assert registry.remove("dog:v1", dry_run=True) == ["dog:v1"]
    assert registry.tags("dog") == ["latest", "v1", "v2"]
    assert registry.remove("dog:v1") == ["dog:v1"]
    assert registry.tags("dog") == ["latest", "v2"]
    with pytest.raises(NotFoundError):
        registry.remove(["walk", "dog:v9"])  # one bad ref: nothing goes
    assert registry.tags("walk") == ["latest", "v1"]
    assert sorted(registry.remove(["dog", "walk:v1", "walk"])) == [
        "dog:latest", "dog:v2", "walk:latest", "walk:v1",
    ]  # fmt: skip
    assert registry.list() == []
    assert not (registry.home / "manifests/subject/dog").exists()
    with pytest.raises(NotFoundError, match="no subject or motion named 'dog'"):
        registry.remove("dog")


def test_remove_by_digest_removes_every_tag_of_that_content(registry: Registry) -> None:
    v1 = registry.add_version("subject", "dog", subject_entry(1))
    registry.add_version("subject", "dog", subject_entry(2))
    registry.tag("dog:v1", "dog:best")
    assert sorted(registry.remove("dog@" + v1.digest[:15])) == ["dog:best", "dog:v1"]
    assert registry.tags("dog") == ["latest", "v2"]


# ---------------------------------------------------------------- verify, prune, du


def test_verify_detects_a_flipped_byte(registry: Registry) -> None:
    manifest = registry.add_version("subject", "dog", subject_entry(1))
    registry.add_version("motion", "walk", motion_entry(2))
    assert registry.verify() == []
    blob = registry.blob_path(manifest.file("adapter").digest)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    problems = registry.verify()
    assert {p.ref for p in problems} == {"dog:latest", "dog:v1"}
    assert all("damaged" in p.message and "identity_adapter.safetensors" in p.message for p in problems)
    # read_file only checks the size; a truncated blob is caught there too.
    blob.write_bytes(bytes(data[:-1]))
    with pytest.raises(RegistryError, match="damaged"):
        registry.read_file(manifest, "adapter")
    # Storing the same content again heals the blob.
    registry.add_version("subject", "dog", subject_entry(1))
    assert registry.verify() == []


def test_verify_reports_missing_blobs_and_bad_manifests(registry: Registry) -> None:
    manifest = registry.add_version("subject", "dog", subject_entry())
    registry.blob_path(manifest.file("config").digest).unlink()
    (registry.home / "manifests/subject/dog/broken.json").write_text("{not json")
    messages = {(p.ref, p.message.split(":")[0]) for p in registry.verify()}
    assert ("dog:v1", "file 'config.json' (config)") in messages
    assert any(ref == "dog:broken" for ref, _ in messages)
    assert any("missing" in p.message for p in registry.verify())
    # A broken manifest is not listed, but can be removed.
    assert [m.tag for m in registry.list()] == ["latest", "v1"]
    with pytest.raises(RegistryError, match="unreadable"):
        registry.prune()
    registry.remove("dog:broken")


def test_prune_removes_unreferenced_blobs_and_leftovers(registry: Registry) -> None:
    keep = registry.add_version("subject", "dog", subject_entry(1))
    gone = registry.add_version("subject", "cat", subject_entry(2))
    registry.remove("cat")
    # Leftovers of writers that died mid-write: temp blob, temp manifest, temp journal.
    (registry.blobs_dir / f"{TMP_PREFIX}blob-1-abc").write_bytes(b"partial")
    (registry.home / "manifests/subject/dog" / f"{TMP_PREFIX}v9.json-1-abc").write_bytes(b"{")
    (registry.home / f"{TMP_PREFIX}journal.json-1-abc").write_bytes(b"{")
    empty = registry.home / "manifests/subject/ghost"
    empty.mkdir()
    (empty / f"{TMP_PREFIX}latest.json-1-abc").write_bytes(b"")
    before = snapshot(registry.home)

    report = registry.prune(dry_run=True)
    assert snapshot(registry.home) == before
    assert len(report.leftovers) == 4
    only_cat = {f.digest for f in gone.files} - {f.digest for f in keep.files}
    assert only_cat and {b.digest for b in report.blobs} == only_cat
    assert report.bytes_freed > 0
    usage = registry.du()
    assert usage.unreferenced_bytes + usage.leftover_bytes == report.bytes_freed

    report = registry.prune()
    assert report.blobs and len(report.leftovers) == 4
    assert not any(name.startswith(TMP_PREFIX) for name in os.listdir(registry.blobs_dir))
    assert not empty.exists()
    assert registry.verify() == []
    assert registry.read_file(registry.resolve("dog"), "adapter") == safetensors_bytes(1)
    assert registry.prune().bytes_freed == 0


def test_du(registry: Registry) -> None:
    assert registry.du().total_bytes == 0
    registry.add_version("subject", "dog", subject_entry(1))
    registry.add_version("subject", "dog", subject_entry(1))  # same files: no new blobs
    registry.add_version("motion", "walk", motion_entry(9))
    usage = registry.du()
    assert usage.blob_count == 6
    assert usage.manifest_count == 5
    assert [(n.name, n.kind, n.tags) for n in usage.names] == [
        ("dog", "subject", ["latest", "v1", "v2"]),
        ("walk", "motion", ["latest", "v1"]),
    ]
    assert usage.reclaimable_bytes == 0
    assert usage.total_bytes == usage.blob_bytes + usage.manifest_bytes


def test_list_sorted_and_filtered(registry: Registry) -> None:
    for i in range(11):
        registry.add_version("motion", "walk", motion_entry(i))
    registry.add_version("subject", "dog", subject_entry())
    registry.tag("dog:v1", "dog:best")
    refs = [m.ref for m in registry.list()]
    assert refs[:3] == ["dog:latest", "dog:v1", "dog:best"]
    assert refs[3:6] == ["walk:latest", "walk:v1", "walk:v2"]
    assert refs[-1] == "walk:v11"
    assert {m.kind for m in registry.list("subject")} == {"subject"}
    with pytest.raises(RegistryError, match="invalid kind"):
        registry.list("video")  # type: ignore[arg-type]


# ---------------------------------------------------------------- crash recovery


class SimulatedCrash(BaseException):
    pass


def _crash_at(monkeypatch: pytest.MonkeyPatch, at: int) -> list[int]:
    """Make the `at`-th durable step (fsync, rename, unlink, rmdir) raise SimulatedCrash."""
    calls = [0]

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == at:
                raise SimulatedCrash
            return original(*args, **kwargs)

        return step

    def no_fsync(fd: int) -> None:
        # Durability against power loss is not what this test is about; skipping it is faster.
        return None

    monkeypatch.setattr(os, "fsync", wrap(no_fsync))
    for name in ("replace", "unlink", "rmdir"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    return calls


def _merge_packs(target: Path, *packs: Path) -> None:
    """One .dvpack holding the manifests and blobs of several."""
    import io
    import tarfile

    manifests: list[object] = []
    blobs: dict[str, bytes] = {}
    for pack in packs:
        with tarfile.open(pack) as tar:
            for member in tar.getmembers():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if member.name == "manifest.json":
                    manifests += json.loads(data)["manifests"]
                else:
                    blobs[member.name] = data
    index = json.dumps({"dvpack": 1, "manifests": manifests}).encode()
    with tarfile.open(target, "w") as tar:
        for name, data in [("manifest.json", index), *sorted(blobs.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _state(home: Path) -> dict[str, str]:
    return {m.ref: m.digest for m in Registry(home).list()}


OPERATIONS = {
    "add_first": lambda r: r.add_version("subject", "cat", subject_entry(5), checkpoints={"step1": subject_entry(6)}),
    "add_next": lambda r: r.add_version("subject", "dog", subject_entry(7), checkpoints={"step1": subject_entry(8)}),
    "tag": lambda r: r.tag("dog:v1", "dog:latest"),
    "remove": lambda r: r.remove(["dog", "walk:v1"]),
    "prune": lambda r: r.prune(),
    # The pack (made by the test) holds a new name and one identical existing tag.
    "import": lambda r: r.import_(r.home.parent / "pack.dvpack"),
}


@pytest.mark.usefixtures("frozen_clock")
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_crash_at_every_step_leaves_old_or_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    """Interrupt the operation at each of its durable steps in turn; whatever a later reader
    sees (after recovery) is exactly the state before or exactly the state after."""
    import shutil

    base = tmp_path / "base"
    seed = Registry(base)
    seed.add_version("subject", "dog", subject_entry(1), checkpoints={"step1": subject_entry(2)})
    seed.add_version("subject", "dog", subject_entry(3))
    seed.add_version("motion", "walk", motion_entry(4))
    seed.remove("walk")
    seed.add_version("motion", "walk", motion_entry(4))
    seed.add_version("motion", "trot", motion_entry(99))
    seed.remove("trot")  # leaves a blob for prune
    (base / "blobs" / f"{TMP_PREFIX}blob-1-abc").write_bytes(b"partial")
    old = _state(base)
    source = Registry(tmp_path / "source")
    source.add_version("subject", "fox", subject_entry(11), checkpoints={"step1": subject_entry(12)})
    source.add_version("motion", "walk", motion_entry(4))  # the same as base's walk:v1
    source.export("fox", tmp_path / "fox.dvpack")
    source.export("walk:v1", tmp_path / "walk.dvpack")
    _merge_packs(tmp_path / "pack.dvpack", tmp_path / "fox.dvpack", tmp_path / "walk.dvpack")

    done = tmp_path / "done"
    shutil.copytree(base, done)
    OPERATIONS[operation](Registry(done))
    new = _state(done)
    with monkeypatch.context() as patch:
        steps = _crash_at(patch, at=0)
        OPERATIONS[operation](Registry(shutil.copytree(base, tmp_path / "count")))
        total = steps[0]
    assert total > 2

    for at in range(1, total + 1):
        home = shutil.copytree(base, tmp_path / f"crash{at}")
        with monkeypatch.context() as patch:
            _crash_at(patch, at)
            with contextlib.suppress(SimulatedCrash):
                OPERATIONS[operation](Registry(home))
        state = _state(home)
        assert state in (old, new), f"crash at step {at}/{total} of {operation}"
        assert Registry(home).verify() == []
        assert not (home / "journal.json").exists()


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_home_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(RegistryError, match="cannot write to the registry"):
            Registry(locked / "home").add_version("subject", "dog", subject_entry())
    finally:
        locked.chmod(0o700)


def test_os_errors_while_writing_are_registry_errors(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.add_version("subject", "dog", subject_entry(1))

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", disk_full)
        with pytest.raises(RegistryError, match="No space left on device"):
            registry.add_version("subject", "dog", subject_entry(2))
    assert registry.tags("dog") == ["latest", "v1"]
    assert registry.verify() == []
