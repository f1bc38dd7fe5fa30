"""A training run's folder on disk: config.json, loss.csv, loss.png, checkpoints/ (the
resumable state as safetensors + JSON, and adapter checkpoints). Every file is written
atomically: a crash leaves the old file or the new one."""

from __future__ import annotations

import csv
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.run_layout import STATE_JSON, runs_folder
from dv_registry.fsutil import atomic_write_bytes  # the one atomic write: temp file, fsync, rename


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(cpu, metadata=metadata))


@dataclass
class Run:
    """A training run's folder: config.json, loss.csv, loss.png, checkpoints/."""

    folder: Path

    @property
    def id(self) -> str:
        return self.folder.name

    @classmethod
    def create(cls, registry_home: Path, kind: str, name: str, config: Any, inputs: str | Path) -> Run:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = runs_folder(registry_home) / f"{stamp}-{kind}-{name}-{secrets.token_hex(2)}"
        (folder / "checkpoints").mkdir(parents=True)
        atomic_write_json(
            folder / "config.json",
            {"kind": kind, "name": name, "inputs": str(Path(inputs).resolve()), "config": asdict(config)},
        )
        return cls(folder)

    @classmethod
    def open(cls, registry_home: Path, run: str) -> Run:
        folder = Path(run) if os.sep in run else runs_folder(registry_home) / run
        if not (folder / "config.json").is_file():
            raise DVError(f"no training run {run!r}", f"runs live in {runs_folder(registry_home)}")
        if not (folder / "checkpoints" / STATE_JSON).is_file():
            raise DVError(f"run {run!r} has no saved state to resume from", "start a new run")
        return cls(folder)

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / "config.json").read_text())
        return data

    def log_losses(self, stage: str, first_step: int, losses: list[float]) -> None:
        path = self.folder / "loss.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["stage", "step", "loss"])
            for i, loss in enumerate(losses):
                writer.writerow([stage, first_step + i, f"{loss:.6g}"])

    def read_losses(self) -> list[tuple[str, int, float]]:
        path = self.folder / "loss.csv"
        if not path.exists():
            return []
        with open(path) as f:
            return [(r["stage"], int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]

    def truncate_losses(self, stage: str, step: int) -> None:
        """On resume, forget losses logged after the saved state (they will be redone)."""
        rows = [r for r in self.read_losses() if not (r[0] == stage and r[1] > step)]
        path = self.folder / "loss.csv"
        path.unlink(missing_ok=True)
        by_stage: dict[str, list[tuple[int, float]]] = {}
        for s, i, loss in rows:
            by_stage.setdefault(s, []).append((i, loss))
        for s, items in by_stage.items():
            if items:
                self.log_losses(s, items[0][0], [loss for _, loss in items])

    def save_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        # Tensors first, then the JSON that points at them: a crash between the two leaves
        # the previous JSON, whose tensors file name differs, still consistent.
        name = f"state-{meta['stage']}-{meta['step']}.safetensors"
        save_tensors(self.folder / "checkpoints" / name, tensors)
        meta = {**meta, "tensors": name}
        atomic_write_json(self.folder / "checkpoints" / STATE_JSON, meta)
        for old in (self.folder / "checkpoints").glob("state-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def state_meta(self) -> dict[str, Any]:
        """Where the saved state stands (stage, step, optimizer scalars, checkpoints kept)."""
        meta: dict[str, Any] = json.loads((self.folder / "checkpoints" / STATE_JSON).read_text())
        return meta

    def load_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from safetensors.torch import load_file

        meta = self.state_meta()
        return load_file(self.folder / "checkpoints" / meta["tensors"]), meta

    def save_loss_plot(self) -> Path | None:
        from dreamvideo_cli.plots import loss_curve_png

        rows = self.read_losses()
        if not rows:
            return None
        path = self.folder / "loss.png"
        atomic_write_bytes(path, loss_curve_png(rows))
        return path
