"""The public API as `dreamvideo_cli/__init__.py` states it: the names in `__all__` resolve,
importing the package pulls in no heavy library, and first-party plugins use nothing else
(the rule a third-party plugin is held to): the package's `__all__`, the contract modules,
and the modules `__all__` names, each through its own public names."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import dreamvideo_cli

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = {f"dreamvideo_cli.{name}" for name in dreamvideo_cli.CONTRACT_MODULES}
# The modules that `__all__` names (`media`, `hub`, ...), used as namespaces.
NAMESPACES = {
    f"dreamvideo_cli.{name}" for name in dreamvideo_cli.__all__ if isinstance(getattr(dreamvideo_cli, name), ModuleType)
}
PUBLIC_MODULES = CONTRACT | NAMESPACES


def _public_names(module: str) -> set[str]:
    """What a module exports: its `__all__`, or else every name without a leading underscore."""
    imported = importlib.import_module(module)
    names = getattr(imported, "__all__", None)
    return set(names) if names is not None else {n for n in vars(imported) if not n.startswith("_")}


def _offences(path: Path) -> list[str]:
    """Every use of dv's code in one file that the public API does not allow."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [
                a.name for a in node.names if a.name.startswith("dreamvideo_cli.") and a.name not in PUBLIC_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "dreamvideo_cli":
                allowed = set(dreamvideo_cli.__all__)
            elif node.module in PUBLIC_MODULES:
                allowed = _public_names(node.module)
            elif node.module.startswith("dreamvideo_cli."):
                found.append(node.module)
                continue
            else:
                continue
            found += [f"{node.module}.{a.name}" for a in node.names if a.name not in allowed]
    return found


def test_first_party_plugins_use_only_the_public_api() -> None:
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted(ROOT.glob("plugins/*/dv_*/**/*.py"))
        for name in _offences(path)
    ]
    assert not offences, "\n".join(offences)


def test_everything_in_all_resolves() -> None:
    missing = [name for name in dreamvideo_cli.__all__ if not hasattr(dreamvideo_cli, name)]
    assert not missing


def test_the_contract_is_the_lowest_layer() -> None:
    """The contract modules the docstring names are the bottom layer that lint-imports checks."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    assert [m.strip() for m in layers["layers"][-1].split(":")] == list(dreamvideo_cli.CONTRACT_MODULES)


def test_docs_state_the_same_public_api() -> None:
    """docs/plugins.md names each contract module and each namespace module."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    unnamed = [m for m in sorted(PUBLIC_MODULES) if f"`{m.removeprefix('dreamvideo_cli.')}`" not in text]
    assert not unnamed


def test_importing_the_package_imports_no_heavy_library() -> None:
    code = "import sys, dreamvideo_cli; print(','.join(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
