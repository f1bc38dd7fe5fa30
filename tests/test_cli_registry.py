"""The registry commands of `dv`, through `main()` (which turns errors into one line) and the runner."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dreamvideo_cli.cli import app, main
from dreamvideo_cli.cli import registry as registry_cli
from dv_registry import JSON, PNG, SAFETENSORS, NewEntry, NewFile, Registry

SUMMARY_KEYS = {
    "ref",
    "kind",
    "name",
    "tag",
    "digest",
    "created",
    "size",
    "backbone",
    "description",
}


def safetensors_bytes(value: int) -> bytes:
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<I", value)


def entry(seed: int, **fields: Any) -> NewEntry:
    return NewEntry(
        files=[
            NewFile("adapter", "identity_adapter.safetensors", safetensors_bytes(seed), SAFETENSORS),
            NewFile("preview", "preview.png", b"\x89PNG\r\n\x1a\n" + bytes([seed]), PNG),
            NewFile("config", "config.json", json.dumps({"seed": seed}).encode(), JSON),
        ],
        fields={"backbone": {"backbone": "tiny", "model_id": "test/tiny"}, "seed": seed, **fields},
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "dv-home"
    monkeypatch.setenv("DV_HOME", str(path))
    # Commands name files relative to here, as a user in a shell would.
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def populated(home: Path) -> Registry:
    registry = Registry()
    registry.add_version(
        "subject", "dog", entry(1, token="<sks>", init_word="dog", description="my dog"),
        checkpoints={"step5": entry(5)},
    )  # fmt: skip
    registry.add_version("subject", "dog", entry(2, token="<sks>", init_word="dog"))
    registry.add_version("motion", "walk", entry(3, phrase="walking"))
    return registry


def dv(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, out: str, err: str) -> str:
    assert code != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- list and show


def test_list_json_on_an_empty_home(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dv(capsys, "list", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, err = dv(capsys, "list")
    assert code == 0 and out == "" and "no subjects or motions yet" in err
    assert not home.exists()  # looking creates nothing


def test_list(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dv(capsys, "list", "--all", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["ref"] for r in rows] == [
        "dog:latest", "dog:v1", "dog:v2", "dog:step5", "walk:latest", "walk:v1",
    ]  # fmt: skip
    assert all(set(r) == SUMMARY_KEYS for r in rows)
    assert rows[0]["digest"] == rows[2]["digest"]  # latest is v2
    assert rows[0]["kind"] == "subject" and rows[0]["backbone"]["backbone"] == "tiny"
    code, out, _ = dv(capsys, "list", "--kind", "motion", "--json")
    assert [r["ref"] for r in json.loads(out)] == ["walk:latest", "walk:v1"]
    code, out, _ = dv(capsys, "list", "-a")
    assert code == 0 and "dog:step5" in out and "walk:v1" in out and "my dog" in out
    # Without --all, the checkpoints are counted, not listed; names filter.
    code, out, err = dv(capsys, "list")
    assert code == 0 and "dog:step5" not in out and "dog:v2" in out and "1 checkpoint tag not shown" in err
    code, out, _ = dv(capsys, "list", "walk", "--json")
    assert [r["ref"] for r in json.loads(out)] == ["walk:latest", "walk:v1"]
    code, out, err = dv(capsys, "list", "cat")
    assert code == 0 and out == "" and "no subjects or motions named cat" in err


def test_show(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dv(capsys, "show", "dog", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["ref"] == "dog:latest" and data["tag"] == "latest" and data["same_as"] == ["v2"]
    assert data["digest"].startswith("sha256:") and data["schema_version"] == 1
    assert [f["filename"] for f in data["files"]] == [
        "identity_adapter.safetensors", "preview.png", "config.json",
    ]  # fmt: skip
    assert set(data["files"][0]) == {"role", "filename", "digest", "size", "media_type"}

    code, out, _ = dv(capsys, "show", "dog:v1")
    assert code == 0
    assert "dog:v1" in out and "<sks>" in out and "identity_adapter.safetensors" in out
    digest = populated.resolve("walk:v1").digest.removeprefix("sha256:")[:8]
    code, out, _ = dv(capsys, "show", f"walk@sha256:{digest}", "--json")
    assert json.loads(out)["phrase"] == "walking"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "no subject or motion named 'nope'"),
        (["rm", "nope", "--yes"], "no subject or motion named 'nope'"),
        (["import", "missing.dvpack"], "no such file: missing.dvpack"),
        (["show", "Dog"], "names are lowercase"),
        (["show", "dog:v9"], "has no tag 'v9'"),
        (["tag", "dog:v1", "dog:v7"], "reserved"),
        (["tag", "dog:v1", "walk:x"], "'walk' is already a motion"),
        (["export", "nope", "x.dvpack"], "no subject or motion named 'nope'"),
    ],
)
def test_user_errors_are_one_line(
    populated: Registry, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    line = assert_one_error_line(*dv(capsys, *args))
    assert message in line


def test_errors_on_an_empty_home(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["show", "nope"], ["rm", "nope", "--yes"], ["import", "missing.dvpack"]):
        assert_one_error_line(*dv(capsys, *args))


# ---------------------------------------------------------------- rm and tag


def test_rm_without_yes_and_without_a_tty_refuses(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    line = assert_one_error_line(*dv(capsys, "rm", "dog"))
    assert "without confirmation" in line and "--yes" in line
    assert populated.tags("dog") == ["latest", "v1", "v2", "step5"]


def test_rm_dry_run(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = dv(capsys, "rm", "dog", "--dry-run", "--json")
    assert code == 0
    assert json.loads(out) == {
        "dry_run": True, "removed": ["dog:latest", "dog:v1", "dog:v2", "dog:step5"],
    }  # fmt: skip
    assert "would remove dog:v1" in err
    assert populated.tags("dog") == ["latest", "v1", "v2", "step5"]


def test_rm_one_tag_then_everything(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = dv(capsys, "rm", "dog:step5", "--yes")
    assert code == 0 and "removed dog:step5" in err and "dv prune" in err
    assert populated.tags("dog") == ["latest", "v1", "v2"]
    code, out, _ = dv(capsys, "rm", "dog", "walk:v1", "--yes", "--json")
    assert code == 0
    assert json.loads(out)["removed"] == ["dog:latest", "dog:v1", "dog:v2", "walk:v1"]
    assert [m.ref for m in populated.list()] == ["walk:latest"]


def test_rm_asks_on_a_tty(populated: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_cli, "_stdin_is_tty", lambda: True)
    runner = CliRunner()
    declined = runner.invoke(app, ["rm", "dog:v1"], input="n\n")
    assert declined.exit_code != 0
    assert populated.tags("dog") == ["latest", "v1", "v2", "step5"]
    accepted = runner.invoke(app, ["rm", "dog:v1"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert populated.tags("dog") == ["latest", "v2", "step5"]


def test_tag(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = dv(capsys, "tag", "dog:v1", "dog:good")
    assert code == 0 and "tagged dog:good" in err
    code, out, _ = dv(capsys, "tag", "dog:v1", "dog", "--json")  # roll latest back to v1
    data = json.loads(out)
    assert set(data) == SUMMARY_KEYS and data["ref"] == "dog:latest"
    assert populated.resolve("dog").digest == populated.resolve("dog:v1").digest


# ---------------------------------------------------------------- export and import


def test_export_import(
    populated: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = dv(capsys, "export", "dog", "dog.dvpack")
    assert code == 0 and "exported dog:latest, dog:v1, dog:v2, dog:step5" in err
    line = assert_one_error_line(*dv(capsys, "export", "dog", "dog.dvpack"))
    assert "already exists" in line and "--force" in line
    code, out, _ = dv(capsys, "export", "walk:v1", "walk.dvpack", "--force", "--json")
    assert code == 0 and json.loads(out)["manifests"][0]["ref"] == "walk:v1"

    monkeypatch.setenv("DV_HOME", str(tmp_path / "other-home"))
    code, out, _ = dv(capsys, "import", "dog.dvpack", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["ref"] for r in rows] == ["dog:latest", "dog:v1", "dog:v2", "dog:step5"]
    assert all(set(r) == SUMMARY_KEYS for r in rows)
    code, _, err = dv(capsys, "import", "walk.dvpack")
    assert code == 0 and "imported walk:v1" in err
    code, out, _ = dv(capsys, "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_import_refuses_a_pickle_posing_as_safetensors(
    populated: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = pickle.dumps({"weights": [1.0]})
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    document = {
        "schema_version": 1, "kind": "subject", "name": "evil", "created": "2024-05-01T00:00:00Z",
        "backbone": {}, "files": [{
            "role": "adapter", "filename": "adapter.safetensors", "digest": digest,
            "size": len(payload), "media_type": "application/vnd.dv.safetensors",
        }],
    }  # fmt: skip
    index = json.dumps({"dvpack": 1, "manifests": [
        {"kind": "subject", "name": "evil", "tag": "v1", "manifest": document},
    ]}).encode()  # fmt: skip
    with tarfile.open(tmp_path / "evil.dvpack", "w") as tar:
        for name, data in [("manifest.json", index), (f"blobs/sha256-{digest[7:]}", payload)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    before = sorted(p.name for p in populated.home.rglob("*"))
    line = assert_one_error_line(*dv(capsys, "import", "evil.dvpack"))
    assert "not a safetensors file" in line
    assert sorted(p.name for p in populated.home.rglob("*")) == before


# ---------------------------------------------------------------- verify, prune, du


def test_verify_on_an_empty_home(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dv(capsys, "verify")
    assert code == 0 and out.startswith("ok: 0 manifests")
    code, out, _ = dv(capsys, "verify", "--json")
    assert code == 0
    assert json.loads(out) == {
        "ok": True,
        "home": str(home),
        "manifests": 0,
        "blobs": 0,
        "problems": [],
    }


def test_verify_names_damaged_entries(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dv(capsys, "verify")
    assert code == 0 and out.startswith("ok: 6 manifests")
    blob = populated.blob_path(populated.resolve("walk:v1").file("adapter").digest)
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF
    blob.write_bytes(bytes(data))

    code, out, err = dv(capsys, "verify", "--json")
    report = json.loads(out)
    assert code == 1
    assert report["ok"] is False
    assert {p["ref"] for p in report["problems"]} == {"walk:latest", "walk:v1"}
    assert set(report["problems"][0]) == {"ref", "path", "message"}
    assert err.strip().splitlines() == [
        "error: the registry has 2 problem(s): walk:latest, walk:v1 (remove damaged entries "
        "with `dv rm` and import or learn them again)"
    ]
    code, out, err = dv(capsys, "verify")
    assert code == 1 and "walk:v1" in out and "damaged" in out and "Traceback" not in err


def test_prune(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dv(capsys, "prune")
    assert code == 0 and "nothing to prune" in out
    populated.remove("walk")
    (populated.home / "blobs" / ".tmp-blob-123-abc").write_bytes(b"half a blob")
    code, out, _ = dv(capsys, "prune", "--dry-run", "--json")
    report = json.loads(out)
    assert code == 0
    assert set(report) == {"dry_run", "bytes_freed", "blobs", "leftovers"}
    assert report["dry_run"] is True and len(report["blobs"]) == 3
    assert report["leftovers"] == [{"path": "blobs/.tmp-blob-123-abc", "size": 11}]
    assert set(report["blobs"][0]) == {"digest", "path", "size"}
    assert (populated.home / "blobs" / ".tmp-blob-123-abc").exists()
    code, out, err = dv(capsys, "prune")
    assert code == 0 and "freed" in out and "removed leftover" in err
    assert not (populated.home / "blobs" / ".tmp-blob-123-abc").exists()
    code, out, _ = dv(capsys, "verify")
    assert code == 0


def test_du(populated: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dv(capsys, "du", "--json")
    usage = json.loads(out)
    assert code == 0
    assert set(usage) == {
        "home", "total_bytes", "blob_count", "blob_bytes", "manifest_count", "manifest_bytes",
        "unreferenced_blob_count", "unreferenced_bytes", "leftover_bytes", "reclaimable_bytes", "runs", "names",
    }  # fmt: skip
    assert usage["manifest_count"] == 6 and usage["reclaimable_bytes"] == 0
    assert [(n["name"], n["kind"], n["tags"]) for n in usage["names"]] == [
        ("dog", "subject", ["latest", "v1", "v2", "step5"]),
        ("walk", "motion", ["latest", "v1"]),
    ]
    code, out, _ = dv(capsys, "du")
    assert code == 0 and "dog" in out and "dv prune" in out


def test_help_lists_the_registry_commands(capsys: pytest.CaptureFixture[str]) -> None:
    result = CliRunner().invoke(app, ["--help"])
    for command in ("list", "show", "rm", "tag", "export", "import", "verify", "prune", "du"):
        assert command in result.output
