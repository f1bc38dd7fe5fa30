"""`dv doctor`: what this machine has, for bug reports and first runs."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import typer

from dreamvideo_cli.cli._help import GroupedCommand
from dreamvideo_cli.cli._output import out, print_json


def install(app: typer.Typer) -> None:
    app.command("doctor", cls=GroupedCommand)(doctor)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def doctor(json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """Check the installation: versions, accelerator, registry home, plugins."""
    import torch

    from dreamvideo_cli import __version__
    from dreamvideo_cli.plugins import get_backbones, load_failures

    try:
        from dv_registry import default_home

        home = str(default_home())
    except Exception as exc:  # report, don't fail: doctor is what people run when things break
        home = f"unavailable ({exc})"
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "dv": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {
            d: _version(d)
            for d in ("torch", "diffusers", "transformers", "open-clip-torch", "av", "safetensors", "huggingface-hub")
        },
        "cuda": cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "dv_home": home,
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"),
        "backbones": sorted(get_backbones()),
        "plugin_failures": load_failures(),
    }
    if json:
        print_json(report)
        return
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v or 'missing'}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        out.print(f"{key:>16}: {value}", markup=False)
