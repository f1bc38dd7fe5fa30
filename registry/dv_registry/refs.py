"""Names, tags and references: `name`, `name:tag`, `name@sha256:<prefix>`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dv_registry.errors import RegistryError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
TAG_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
VERSION_TAG_RE = re.compile(r"v([1-9][0-9]*)")
DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
MIN_DIGEST_PREFIX = 6
LATEST = "latest"


def check_name(name: str) -> str:
    if NAME_RE.fullmatch(name):
        return name
    if name and NAME_RE.fullmatch(name.lower()):
        raise RegistryError(f"invalid name {name!r}: names are lowercase", hint=f"use {name.lower()!r}")
    raise RegistryError(
        f"invalid name {name!r}",
        hint="a name is 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
    )


def check_tag(tag: str) -> str:
    if TAG_RE.fullmatch(tag):
        return tag
    if tag and TAG_RE.fullmatch(tag.lower()):
        raise RegistryError(f"invalid tag {tag!r}: tags are lowercase", hint=f"use {tag.lower()!r}")
    raise RegistryError(
        f"invalid tag {tag!r}",
        hint="a tag is 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
    )


def is_version_tag(tag: str) -> bool:
    """`v1`, `v2`, ...: the tags `add_version` hands out, which nothing else may write."""
    return VERSION_TAG_RE.fullmatch(tag) is not None


def version_number(tag: str) -> int | None:
    match = VERSION_TAG_RE.fullmatch(tag)
    return int(match.group(1)) if match else None


def is_reserved_tag(tag: str) -> bool:
    return tag == LATEST or is_version_tag(tag)


def check_digest(digest: str) -> str:
    """A full `sha256:<64 hex>` digest; returns the hex part."""
    match = DIGEST_RE.fullmatch(digest)
    if match is None:
        raise RegistryError(f"invalid digest {digest!r}", hint="expected 'sha256:' and 64 lowercase hex digits")
    return match.group(1)


@dataclass(frozen=True)
class Ref:
    """A parsed reference. Exactly one of `tag` and `digest_prefix` is set."""

    name: str
    tag: str | None = None
    digest_prefix: str | None = None
    # False for a bare `name`: `dv rm NAME` and `dv export NAME` mean every tag of NAME.
    explicit: bool = True

    def __str__(self) -> str:
        if self.digest_prefix is not None:
            return f"{self.name}@sha256:{self.digest_prefix}"
        return f"{self.name}:{self.tag}"


def parse_ref(text: str) -> Ref:
    """Parse `name`, `name:tag` or `name@sha256:<hex prefix>` (at least 6 hex digits)."""
    text = text.strip()
    if "@" in text:
        name, _, digest = text.partition("@")
        check_name(name)
        algorithm, sep, prefix = digest.partition(":")
        if algorithm != "sha256" or not sep:
            raise RegistryError(
                f"invalid reference {text!r}",
                hint="a digest reference looks like name@sha256:1a2b3c",
            )
        prefix = prefix.lower()
        if not re.fullmatch(r"[0-9a-f]+", prefix) or len(prefix) > 64:
            raise RegistryError(f"invalid digest {digest!r} in {text!r}", hint="use hex digits after 'sha256:'")
        if len(prefix) < MIN_DIGEST_PREFIX:
            raise RegistryError(
                f"digest prefix {prefix!r} is too short",
                hint=f"give at least {MIN_DIGEST_PREFIX} hex digits",
            )
        return Ref(name=name, digest_prefix=prefix)
    if ":" in text:
        name, _, tag = text.partition(":")
        return Ref(name=check_name(name), tag=check_tag(tag))
    return Ref(name=check_name(text), tag=LATEST, explicit=False)
