"""The public API: what `dreamvideo_cli.__all__` names resolves, importing the package pulls
in no heavy library, and first-party plugins import only public modules (the same rule a
third-party plugin is held to), never `cli._*`, `learn.common` or the engine's internals."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dreamvideo_cli

ROOT = Path(__file__).resolve().parents[1]
# Modules a plugin may import besides the package itself (docs/plugins.md).
PUBLIC_MODULES = {
    "dreamvideo_cli",
    "dreamvideo_cli.adapters",
    "dreamvideo_cli.appearance",
    "dreamvideo_cli.backbone",
    "dreamvideo_cli.cli.render",
    "dreamvideo_cli.codecs",
    "dreamvideo_cli.compose",
    "dreamvideo_cli.errors",
    "dreamvideo_cli.events",
    "dreamvideo_cli.hookspecs",
    "dreamvideo_cli.hub",
    "dreamvideo_cli.learn",
    "dreamvideo_cli.media",
    "dreamvideo_cli.metrics",
    "dreamvideo_cli.objectives",
    "dreamvideo_cli.plugins",
    "dreamvideo_cli.runtime",
    "dreamvideo_cli.samplers",
    "dreamvideo_cli.testing",
    "dreamvideo_cli.text",
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "dreamvideo_cli":
                found.update(
                    f"dreamvideo_cli.{a.name}" for a in node.names if f"dreamvideo_cli.{a.name}" in PUBLIC_MODULES
                )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "dreamvideo_cli" or m.startswith("dreamvideo_cli.")}


def test_first_party_plugins_import_only_public_modules() -> None:
    offences = []
    for path in sorted(ROOT.glob("plugins/*/dv_*/**/*.py")):
        for module in sorted(_imports(path) - PUBLIC_MODULES):
            offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offences, "\n".join(offences)


def test_everything_in_all_resolves() -> None:
    missing = [name for name in dreamvideo_cli.__all__ if not hasattr(dreamvideo_cli, name)]
    assert not missing


def test_importing_the_package_imports_no_heavy_library() -> None:
    code = "import sys, dreamvideo_cli; print(','.join(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
