"""The plugin manager: entry-point group "dreamvideo", built-ins through the same hooks.

Environment:
- `DV_LOAD_PLUGINS=a,b` loads only the entry points (or distributions) named a and b;
  an empty value loads none.
- `DV_STRICT_PLUGINS=1` turns a plugin that fails to import into an error instead of
  a warning.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pluggy

from dreamvideo_cli import hookspecs
from dreamvideo_cli.errors import DVError

if TYPE_CHECKING:
    from dreamvideo_cli.backbone import Backbone
    from dreamvideo_cli.metrics import Metric
    from dreamvideo_cli.samplers import Sampler

ENTRY_POINT_GROUP = "dreamvideo"

pm = pluggy.PluginManager("dreamvideo")
pm.add_hookspecs(hookspecs)

_loaded = False
_load_failures: list[str] = []
# plugin name -> (distribution, version) for plugins that came from entry points
_provenance: dict[str, tuple[str, str]] = {}


def _selected(only: set[str] | None, ep: importlib.metadata.EntryPoint) -> bool:
    if only is None:
        return True
    dist = ep.dist.name if ep.dist is not None else ""
    return ep.name in only or dist in only


def load_plugins() -> None:
    """Import every plugin once. A plugin that fails prints one warning (unless strict)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    raw = os.environ.get("DV_LOAD_PLUGINS")
    only = None if raw is None else {p.strip() for p in raw.split(",") if p.strip()}
    strict = os.environ.get("DV_STRICT_PLUGINS", "") not in ("", "0", "false")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if not _selected(only, ep) or pm.has_plugin(ep.name):
            continue
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must not take dv down with it
            message = f"plugin {ep.name!r} ({dist}) failed to load: {type(exc).__name__}: {exc}"
            if strict:
                raise DVError(message, "unset DV_STRICT_PLUGINS to skip it") from exc
            _load_failures.append(message)
            continue
        _provenance[ep.name] = (dist, ep.dist.version if ep.dist is not None else "?")


def load_failures() -> list[str]:
    """One line per plugin that failed to load, for the CLI to print as warnings."""
    load_plugins()
    return list(_load_failures)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


def list_plugins() -> list[PluginInfo]:
    load_plugins()
    out = []
    for name, plugin in pm.list_name_plugin():
        if name is None:
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or []))
        dist, version = _provenance.get(name, ("(registered at runtime)", ""))
        out.append(PluginInfo(name, dist, version, hooks))
    return sorted(out, key=lambda p: p.name)


T = TypeVar("T")


@dataclass(frozen=True)
class Registered(Generic[T]):
    """Something a plugin registered, with where it came from."""

    name: str
    item: T
    plugin: str
    distribution: str
    version: str


def _collect(hook_name: str, name_of: Callable[[Any], str]) -> dict[str, Registered[Any]]:
    load_plugins()
    found: dict[str, Registered[Any]] = {}
    caller = getattr(pm.hook, hook_name)
    # Call each implementation on its own so we know which plugin registered what.
    for impl in reversed(caller.get_hookimpls()):
        plugin_name = pm.get_name(impl.plugin) or "?"
        dist, version = _provenance.get(plugin_name, ("(registered at runtime)", ""))

        def register(item: Any, _plugin: str = plugin_name, _d: str = dist, _v: str = version) -> None:
            name = name_of(item)
            if name in found:
                raise DVError(
                    f"{hook_name}: {name!r} is registered by both {found[name].plugin!r} and {_plugin!r}",
                    "uninstall one of the two plugins or set DV_LOAD_PLUGINS",
                )
            found[name] = Registered(name, item, _plugin, _d, _v)

        impl.function(register)
    return found


def get_backbones() -> dict[str, Registered[type[Backbone]]]:
    return _collect("register_backbones", lambda cls: cls.name)


def get_samplers() -> dict[str, Registered[Sampler]]:
    return _collect("register_samplers", lambda s: s.name)


def get_metrics() -> dict[str, Registered[type[Metric]]]:
    return _collect("register_metrics", lambda cls: cls.name)


def get_backbone(name: str) -> type[Backbone]:
    backbones = get_backbones()
    if name not in backbones:
        known = ", ".join(sorted(backbones)) or "none"
        raise DVError(f"unknown backbone {name!r}", f"known backbones: {known}; see `dv backbones`")
    return backbones[name].item


def get_sampler(name: str) -> Sampler:
    samplers = get_samplers()
    if name not in samplers:
        known = ", ".join(sorted(samplers)) or "none"
        raise DVError(f"unknown sampler {name!r}", f"known samplers: {known}")
    return samplers[name].item


def get_metric(name: str) -> type[Metric]:
    metrics = get_metrics()
    if name not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        raise DVError(f"unknown metric {name!r}", f"known metrics: {known}; see `dv metrics`")
    return metrics[name].item


@contextmanager
def registered(plugin: object, name: str) -> Iterator[None]:
    """Register a plugin object for the duration of a `with` block (tests, notebooks)."""
    load_plugins()
    pm.register(plugin, name=name)
    try:
        yield
    finally:
        pm.unregister(name=name)
