"""The same frames make the same video in any process (issue 20, item 6): x264's output
depends on its thread count, which it picks from the CPUs a process may use, so an
evaluation grid split by `accelerate launch` scored the same cell differently. Videos are
encoded with one thread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SNIPPET = """
import hashlib, sys
import numpy as np
from dreamvideo_cli import media
rng = np.random.default_rng(0)
frames = (rng.random((12, 256, 256, 3)) * 255).astype(np.uint8)
path = media.write_video(sys.argv[1], frames, 8)
print(hashlib.sha256(media.read_frames(path, None).tobytes()).hexdigest())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_video_encodes_the_same_on_one_cpu_and_on_all(tmp_path: Path) -> None:
    digests = []
    for name, cpus in (("one", {min(os.sched_getaffinity(0))}), ("all", os.sched_getaffinity(0))):
        done = subprocess.run(
            [sys.executable, "-c", SNIPPET, str(tmp_path / f"{name}.mp4")],
            capture_output=True, text=True, timeout=120, preexec_fn=lambda cpus=cpus: os.sched_setaffinity(0, cpus),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        digests.append(done.stdout.strip())
    assert digests[0] == digests[1]
