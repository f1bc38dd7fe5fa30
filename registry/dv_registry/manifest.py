"""The manifest: what one tag of a subject or motion is, and how it is stored as bytes.

A manifest file holds everything except its own tag: tags are pointers, so `dog:latest`
and `dog:v2` are byte-identical files with one digest, like image tags in a container
registry. The digest of a manifest is the sha256 of its stored bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from dv_registry.errors import NewerSchemaError, NotFoundError, RegistryError
from dv_registry.media import check_media_type
from dv_registry.refs import DIGEST_RE, check_name, check_tag

SCHEMA_VERSION = 1

Kind = Literal["subject", "motion"]
KINDS: tuple[Kind, ...] = get_args(Kind)

ROLE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_FORBIDDEN_IN_FILENAME = ("/", "\\", "\x00")


def check_kind(kind: str) -> Kind:
    if kind == "subject":
        return "subject"
    if kind == "motion":
        return "motion"
    raise RegistryError(f"invalid kind {kind!r}", hint="use 'subject' or 'motion'")


def check_filename(filename: str) -> str:
    """A plain basename: used as-is when files are exported, so no directories, no '..'."""
    if (
        not filename
        or filename in {".", ".."}
        or any(c in filename for c in _FORBIDDEN_IN_FILENAME)
        or len(filename) > 255
        or ":" in filename
    ):
        raise RegistryError(f"invalid file name {filename!r}", hint="use a plain file name, no directories")
    return filename


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FileEntry(BaseModel):
    """One stored file of a manifest: a blob plus what it is for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str
    filename: str
    digest: str
    size: int = Field(ge=0)
    media_type: str

    @field_validator("role")
    @classmethod
    def _role(cls, role: str) -> str:
        if not ROLE_RE.fullmatch(role):
            raise ValueError(f"invalid role {role!r}")
        return role

    @field_validator("filename")
    @classmethod
    def _filename(cls, filename: str) -> str:
        return _as_value_error(check_filename, filename)

    @field_validator("digest")
    @classmethod
    def _digest(cls, digest: str) -> str:
        if not DIGEST_RE.fullmatch(digest):
            raise ValueError(f"invalid digest {digest!r}")
        return digest

    @field_validator("media_type")
    @classmethod
    def _media_type(cls, media_type: str) -> str:
        return _as_value_error(check_media_type, media_type)


class Manifest(BaseModel):
    """One tag of a subject or motion: how it was made and which blobs hold it."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schema_version: int = SCHEMA_VERSION
    kind: Kind
    name: str
    tag: str
    created: datetime
    backbone: dict[str, Any]
    adapter: dict[str, Any] = Field(default_factory=dict)
    parameter_count: int = Field(default=0, ge=0)
    token: str | None = None
    init_word: str | None = None
    phrase: str | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    dataset_digest: str | None = None
    duration_s: float | None = None
    files: list[FileEntry]
    metrics: dict[str, float] = Field(default_factory=dict)
    description: str = ""

    # sha256 of the bytes this manifest was read from; None until stored or read.
    _stored_digest: str | None = PrivateAttr(default=None)

    @field_validator("schema_version")
    @classmethod
    def _schema_version(cls, version: int) -> int:
        if version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {version} is newer than this dv's {SCHEMA_VERSION}")
        if version < 1:
            raise ValueError(f"invalid schema_version {version}")
        return version

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return _as_value_error(check_name, name)

    @field_validator("tag")
    @classmethod
    def _tag(cls, tag: str) -> str:
        return _as_value_error(check_tag, tag)

    @field_validator("created")
    @classmethod
    def _created(cls, created: datetime) -> datetime:
        # Stored times are UTC so that a manifest's bytes do not depend on the writer's zone.
        if created.tzinfo is None:
            return created.replace(tzinfo=UTC)
        return created.astimezone(UTC)

    @model_validator(mode="after")
    def _unique_filenames(self) -> Manifest:
        seen: set[str] = set()
        for entry in self.files:
            if entry.filename in seen:
                raise ValueError(f"two files are named {entry.filename!r}")
            seen.add(entry.filename)
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of the manifest's stored bytes (of its canonical bytes if not stored)."""
        if self._stored_digest is None:
            self._stored_digest = sha256_digest(encode_manifest(self))
        return self._stored_digest

    @property
    def short_digest(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]

    @property
    def size(self) -> int:
        """Bytes of the files it references (blobs shared with other tags counted in full)."""
        return sum(entry.size for entry in self.files)

    def files_with(self, role: str) -> list[FileEntry]:
        return [entry for entry in self.files if entry.role == role]

    def file(self, role: str) -> FileEntry:
        """The one file with `role`; RegistryError if there is none or more than one."""
        entries = self.files_with(role)
        if len(entries) == 1:
            return entries[0]
        if not entries:
            have = ", ".join(sorted({e.role for e in self.files})) or "none"
            raise NotFoundError(f"{self.ref} has no {role!r} file", hint=f"its roles: {have}")
        raise RegistryError(f"{self.ref} has {len(entries)} {role!r} files; use files_with({role!r})")

    def with_tag(self, tag: str) -> Manifest:
        """The same stored manifest seen through another tag (same bytes, same digest)."""
        copy = self.model_copy(update={"tag": check_tag(tag)})
        copy._stored_digest = self._stored_digest
        return copy

    def to_document(self) -> dict[str, Any]:
        """The JSON document as stored: every field except the tag."""
        return self.model_dump(mode="json", exclude={"tag"})


def encode_manifest(manifest: Manifest) -> bytes:
    """Canonical bytes: sorted keys, so the same manifest always has the same digest."""
    try:
        text = json.dumps(manifest.to_document(), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"manifest {manifest.ref} cannot be stored as JSON: {exc}") from None
    return (text + "\n").encode("utf-8")


def decode_manifest(data: bytes, *, tag: str, where: str) -> Manifest:
    """Parse stored manifest bytes seen through `tag`; `where` names it in errors."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistryError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RegistryError(f"{where} is not a manifest (not a JSON object)")
    manifest = manifest_from_document(document, tag=tag, where=where)
    manifest._stored_digest = sha256_digest(data)
    return manifest


def manifest_from_document(document: dict[str, Any], *, tag: str, where: str) -> Manifest:
    check_schema_version(document.get("schema_version", SCHEMA_VERSION), where)
    fields = {key: value for key, value in document.items() if key != "tag"}
    try:
        return Manifest.model_validate({**fields, "tag": tag})
    except ValidationError as exc:
        raise RegistryError(f"{where} is not a valid manifest: {describe_validation_error(exc)}") from None


def check_schema_version(version: Any, where: str) -> None:
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"{where} was written by a newer dv (manifest schema {version}, this dv reads {SCHEMA_VERSION}); upgrade",
            hint="upgrade dv, e.g. `pip install -U dreamvideo`",
        )


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one short line."""
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{location}: {message}{more}" if location else message + more


def _as_value_error(check: Callable[[str], str], value: str) -> str:
    # pydantic reports ValueErrors as validation errors; RegistryError would escape unlabelled.
    try:
        return check(value)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
