"""Issue 31, item 12: an interrupt stops compose and sweeps as it stops learning, even in a
process that inherited SIGINT ignored (started in the background by a shell without job
control): one line, exit 130, no video written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from dreamvideo_cli.cli import run; run()"]


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [False, True], ids=["compose", "sweep"])
def test_sigint_stops_compose_started_with_sigint_ignored(studio: Path, tmp_path: Path, sweep: bool) -> None:
    env = {**os.environ, "DV_HOME": str(studio / "home"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / ("sweep" if sweep else "never.mp4")
    args = ["compose", "rex", "-", "on the beach", "--sample-steps", "900", "--frames", "8", "--device", "cpu",
            "-o", str(out), "--seed", "1", *(["--subject-scale", "0.5,1"] if sweep else [])]  # fmt: skip
    proc = subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # what `cmd &` in `sh -c` gives
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if line.startswith("sampling") or time.monotonic() > deadline:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    assert "error: interrupted" in rest and "Traceback" not in rest
    assert not list(tmp_path.rglob("*.mp4")) and not list(tmp_path.rglob("*.png"))
