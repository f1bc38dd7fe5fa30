from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The helpers are a plain module next to the tests, importable whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).parent))

from dv_registry import Registry


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_fsync: let os.fsync reach the disk in this test")


@pytest.fixture(autouse=True)
def _skip_fsync(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync only matters for power loss, which no in-process test simulates, and costs
    milliseconds per call on CI disks. The calls still happen, and the tests that kill real
    writer processes (and those marked real_fsync) run with the real thing."""
    if request.node.get_closest_marker("real_fsync") is None:

        def fstat_instead(fd: int) -> None:
            os.fstat(fd)  # still fails on a bad descriptor, as fsync would

        monkeypatch.setattr(os, "fsync", fstat_instead)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "dv-home"
    monkeypatch.setenv("DV_HOME", str(path))
    return path


@pytest.fixture
def registry(home: Path) -> Registry:
    return Registry()
