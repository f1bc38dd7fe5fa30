"""The only kinds of file the registry stores, and checks that a file is what its type says.

Nothing here deserialises tensors: a safetensors file is checked by parsing its JSON header
and its layout, never by loading it, and nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

from dv_registry.errors import RegistryError

SAFETENSORS: Final = "application/vnd.dv.safetensors"
PNG: Final = "image/png"
JPEG: Final = "image/jpeg"
JSON: Final = "application/json"
MEDIA_TYPES: Final[frozenset[str]] = frozenset({SAFETENSORS, PNG, JPEG, JSON})

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# Real adapter headers are kilobytes; the cap stops a hostile length from allocating gigabytes.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# JSON files are configs and metadata; bigger ones are almost certainly not what they claim.
MAX_JSON_BYTES = 64 * 1024 * 1024

# Bits per element, as the safetensors format defines them.
SAFETENSORS_DTYPE_BITS: Final[dict[str, int]] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}


def check_media_type(media_type: str) -> str:
    if media_type not in MEDIA_TYPES:
        raise RegistryError(
            f"unsupported media type {media_type!r}",
            hint="the registry stores only " + ", ".join(sorted(MEDIA_TYPES)),
        )
    return media_type


def check_file(path: Path, media_type: str, what: str) -> None:
    """Raise RegistryError unless the file at `path` is a well-formed `media_type` file."""
    check_media_type(media_type)
    with path.open("rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        check_stream(stream, size, media_type, what)


def check_stream(stream: IO[bytes], size: int, media_type: str, what: str) -> None:
    stream.seek(0)
    if media_type == SAFETENSORS:
        _check_safetensors(stream, size, what)
    elif media_type == PNG:
        if stream.read(len(PNG_MAGIC)) != PNG_MAGIC:
            raise RegistryError(f"{what} is not a PNG image (wrong magic bytes)")
    elif media_type == JPEG:
        if stream.read(len(JPEG_MAGIC)) != JPEG_MAGIC:
            raise RegistryError(f"{what} is not a JPEG image (wrong magic bytes)")
    elif media_type == JSON:
        if size > MAX_JSON_BYTES:
            raise RegistryError(f"{what} is too large for a JSON file ({size} bytes)")
        try:
            json.loads(stream.read().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RegistryError(f"{what} is not valid JSON: {exc}") from None
    else:
        check_media_type(media_type)


def _check_safetensors(stream: IO[bytes], size: int, what: str) -> None:
    def bad(reason: str) -> RegistryError:
        return RegistryError(f"{what} is not a safetensors file: {reason}")

    prefix = stream.read(8)
    if len(prefix) < 8:
        raise bad("shorter than the 8-byte header length")
    header_len = int.from_bytes(prefix, "little")
    if header_len < 2 or header_len > MAX_SAFETENSORS_HEADER or 8 + header_len > size:
        raise bad(f"implausible header length {header_len} for a {size}-byte file")
    raw = stream.read(header_len)
    if not raw.startswith(b"{"):
        raise bad("the header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    data_size = size - 8 - header_len
    spans: list[tuple[int, int, str]] = []
    for key, value in header.items():
        if key == "__metadata__":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise bad("__metadata__ must map strings to strings")
            continue
        spans.append(_tensor_span(key, value, bad))
    # The format requires tensors to tile the data section exactly: no gaps, no overlaps.
    position = 0
    for begin, end, key in sorted(spans):
        if begin != position:
            raise bad(f"tensor {key!r} starts at byte {begin}, expected {position}")
        position = end
    if position != data_size:
        raise bad(f"tensors cover {position} bytes but the data section has {data_size}")


def _tensor_span(key: str, info: Any, bad: Callable[[str], RegistryError]) -> tuple[int, int, str]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"tensor {key!r} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_DTYPE_BITS:
        raise bad(f"tensor {key!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise bad(f"tensor {key!r} has an invalid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)):
        raise bad(f"tensor {key!r} has invalid data_offsets")
    begin, end = offsets
    bits = math.prod(shape) * SAFETENSORS_DTYPE_BITS[dtype]
    if bits % 8 or end - begin != bits // 8:
        raise bad(f"tensor {key!r}: data_offsets do not match its dtype and shape")
    return begin, end, key


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
