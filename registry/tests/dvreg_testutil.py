"""Helpers shared by the registry tests and the writer processes they start (no torch)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from dv_registry import JPEG, JSON, PNG, SAFETENSORS, NewEntry, NewFile


def safetensors_bytes(value: int = 0) -> bytes:
    """A valid one-tensor safetensors file: 8-byte LE header length, JSON header, 4 data bytes."""
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<I", value % 2**32)


def png_bytes(seed: int = 0) -> bytes:
    # Only the magic bytes are checked; the rest makes each image's content distinct.
    return b"\x89PNG\r\n\x1a\n" + seed.to_bytes(8, "little")


def jpeg_bytes(seed: int = 0) -> bytes:
    return b"\xff\xd8\xff\xe0" + seed.to_bytes(8, "little")


def subject_entry(seed: int = 0, **fields: object) -> NewEntry:
    return NewEntry(
        files=[
            NewFile("adapter", "identity_adapter.safetensors", safetensors_bytes(seed), SAFETENSORS),
            NewFile("token_embedding", "token.safetensors", safetensors_bytes(seed + 1), SAFETENSORS),
            NewFile("reference_image", "ref0.png", png_bytes(seed), PNG),
            NewFile("reference_image", "ref1.jpg", jpeg_bytes(seed), JPEG),
            NewFile("config", "config.json", json.dumps({"seed": seed}).encode(), JSON),
        ],
        fields={
            "backbone": {
                "backbone": "tiny",
                "model_id": "test/tiny",
                "revision": "0",
                "random_weights": True,
            },
            "adapter": {"sites": 4, "widths": [32, 64]},
            "parameter_count": 1234,
            "token": "<sks>",
            "init_word": "dog",
            "seed": seed,
            "description": f"entry {seed}",
            **fields,
        },
    )


def small_subject_entry(seed: int = 0) -> NewEntry:
    """An adapter and a preview: few files, so few fsyncs, for tests that write a lot."""
    return NewEntry(
        files=[
            NewFile("adapter", "identity_adapter.safetensors", safetensors_bytes(seed), SAFETENSORS),
            NewFile("preview", "preview.png", png_bytes(seed), PNG),
        ],
        fields={
            "backbone": {"backbone": "tiny"},
            "token": "<sks>",
            "init_word": "dog",
            "seed": seed,
        },
    )


def motion_entry(seed: int = 0, **fields: object) -> NewEntry:
    return NewEntry(
        files=[NewFile("adapter", "motion_adapter.safetensors", safetensors_bytes(seed), SAFETENSORS)],
        fields={"backbone": {"backbone": "tiny"}, "phrase": "walking", **fields},
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with a hash of its content: compare before/after an operation."""
    listing: dict[str, str] = {}
    if not root.exists():
        return listing
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            listing[key] = "symlink"
        elif path.is_dir():
            listing[key] = "dir"
        else:
            listing[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return listing
