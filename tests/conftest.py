"""Fixtures shared by the engine's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLI = [sys.executable, "-c", "from dreamvideo_cli.cli import run; run()"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry (`studio / "home"`, for DV_HOME) with a tiny subject `rex`, learnt in a few
    steps by a real `dv subject learn`; one per test module."""
    root = tmp_path_factory.mktemp("studio")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    env = {**os.environ, "DV_HOME": str(root / "home")}
    args = ["subject", "learn", str(photos), "--name", "rex", "--init-word", "dog", "--backbone", "tiny",
            "--embedding-steps", "1", "--adapter-steps", "1", "--device", "cpu", "--save-every", "0"]  # fmt: skip
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return root
