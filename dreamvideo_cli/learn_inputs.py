"""What a learn command names, checked before torch loads (a mistake costs a second, not the
9-15 s of importing the engine): one name stays on one backbone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dreamvideo_cli.errors import DVError

if TYPE_CHECKING:
    from dv_registry import Manifest, Registry


def backbone_key(manifest: Manifest) -> tuple[str, bool]:
    """The backbone an entry was learnt on, as far as telling backbones apart without loading
    them goes: its registered name and whether its weights were random."""
    fingerprint: dict[str, Any] = manifest.backbone
    return str(fingerprint.get("backbone")), bool(fingerprint.get("random_weights", False))


def describe_key(key: tuple[str, bool]) -> str:
    return f"{key[0]} (random weights)" if key[1] else key[0]


def versions_on(registry: Registry, name: str, key: tuple[str, bool]) -> list[str]:
    """The `vN` references of `name` learnt on the backbone `key`, newest first."""
    from dv_registry.refs import is_version_tag

    found = []
    for tag in registry.tags(name):
        if is_version_tag(tag):
            manifest = registry.resolve(f"{name}:{tag}")
            if backbone_key(manifest) == key:
                found.append(manifest.ref)
    return sorted(found, key=lambda ref: int(ref.rpartition(":v")[2]), reverse=True)


def check_backbone_of_name(
    registry: Registry, kind: str, name: str, backbone: str, random_weights: bool, *, force: bool
) -> str | None:
    """Refuse to learn `name` on another backbone than its `latest` (that would move `latest`
    where composes with the name's other adapters no longer work), unless `force`; with
    `force`, the warning to show. None when the name is new or stays on its backbone."""
    from dv_registry import NotFoundError
    from dv_registry.refs import check_name

    check_name(name)
    try:
        latest = registry.resolve(name)
    except NotFoundError:
        return None
    was, now = backbone_key(latest), (backbone, random_weights)
    if latest.kind != kind or was == now:  # the other kind: learning refuses the name itself
        return None
    if not force:
        raise DVError(
            f"{name} is learnt on {describe_key(was)}; learning it on {describe_key(now)} would move {name}:latest "
            "to another backbone",
            f"choose another name, e.g. {name}-{backbone}, or pass --force to move {name}:latest",
        )
    return f"{name}:latest moves from {describe_key(was)} to {describe_key(now)}; its earlier versions stay on {describe_key(was)}"
