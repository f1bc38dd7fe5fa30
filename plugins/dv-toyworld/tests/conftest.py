"""Shared fixtures: a toyworld weights file that exists whether or not the committed
weights have been trained yet."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed weights if present, else a freshly initialised model saved to tmp."""
    from dv_toyworld import model

    if model.WEIGHTS_FILE.is_file():
        return model.WEIGHTS_FILE
    path = tmp_path_factory.mktemp("toyworld") / "toyworld.safetensors"
    model.save(path, model.build(seed=0), {"command": "tests: random init", "seed": "0"})
    return path
