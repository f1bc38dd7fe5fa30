"""Make the workspace's distributions visible to importlib.metadata on a machine where
they cannot be pip-installed (a GPU machine with no network and no build backend, as
scripts/gpu-checks.sh expects): one dist-info folder per distribution, holding its entry
points, in a folder on PYTHONPATH. Plugins then register exactly as if installed.
Usage: python scripts/device_entry_points.py SITE"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    for pyproject in [
        ROOT / "pyproject.toml",
        *sorted(ROOT.glob("registry/pyproject.toml")),
        *sorted(ROOT.glob("plugins/*/pyproject.toml")),
    ]:
        project = tomllib.loads(pyproject.read_text())["project"]
        name, version = project["name"], project["version"]
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = []
        for group, points in project.get("entry-points", {}).items():
            lines.append(f"[{group}]")
            lines += [f"{key} = {value}" for key, value in points.items()]
        if "scripts" in project:
            lines.append("[console_scripts]")
            lines += [f"{key} = {value}" for key, value in project["scripts"].items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        print(f"{name} {version}: {info.name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
