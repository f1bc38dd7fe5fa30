"""Long clips: peak memory and wall time of `dv motion learn`, and random-access reading.

    uv run python scripts/bench_long_clip.py make  --output CLIPS_DIR               # two clips
    uv run python scripts/bench_long_clip.py learn --clips CLIPS_DIR/10s         # one run
    uv run python scripts/bench_long_clip.py learn --clips CLIPS_DIR/10min \\
        --python ../dv-before/.venv/bin/python        # another checkout (git worktree add)
    uv run python scripts/bench_long_clip.py read  --clip CLIPS_DIR/10min/clip.mp4

`make` writes a 10-second and a 10-minute 1280x720 30 fps H.264 clip with PyAV (a textured
background with a moving rectangle, x264 `ultrafast`), each in its own folder, since
`dv motion learn` takes a folder. `learn` runs `dv motion learn --backbone tiny --adapter-steps 1`
in a child process (any checkout's interpreter with `--python`) and reports the child's
peak resident set (getrusage's ru_maxrss) and wall time. `read` times 32 frames at 8 fps
(stride 4) from random starts of a clip, decord against PyAV, opening included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 1280, 720, 30


def make_clip(path: Path, seconds: float) -> Path:
    """A textured background (fixed noise, so every frame costs the decoder something) and
    a rectangle that crosses it once a second and a half."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, np.full_like(xx, 96)], axis=-1)
    background = np.clip(background + rng.integers(-12, 13, background.shape), 0, 255).astype(np.uint8)
    frames = round(seconds * FPS)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS), options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            frame = background.copy()
            x = int((i % 45) / 45 * (WIDTH - 200))
            y = int(HEIGHT / 2 - 60 + 100 * np.sin(i / 15))
            frame[y : y + 120, x : x + 200] = (230, 40, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def cmd_make(args: argparse.Namespace) -> None:
    for name, seconds in (("10s", 10.0), ("10min", 600.0)):
        started = time.monotonic()
        path = make_clip(args.out / name / "clip.mp4", seconds)
        size = path.stat().st_size / 2**20
        print(f"{path}: {seconds:.0f} s, {size:.1f} MiB, made in {time.monotonic() - started:.0f} s")


def cmd_learn(args: argparse.Namespace) -> None:
    python = args.python or sys.executable
    with tempfile.TemporaryDirectory(prefix="dv-bench-home-") as home:
        env = {**os.environ, "DV_HOME": home, "HF_HUB_OFFLINE": "1"}
        command = [
            python, "-m", "dreamvideo_cli", "motion", "learn", str(args.clips), "--name", "bench",
            "--backbone", "tiny", "--adapter-steps", "1", "--device", "cpu", "--seed", "0",
        ]  # fmt: skip
        started = time.monotonic()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert child.stderr is not None
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would mix earlier children in).
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - started
        err = child.stderr.read().decode(errors="replace")
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"dv motion learn failed ({child.returncode}):\n{err}")
    result = {
        "clips": str(args.clips),
        "python": python,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "wall_s": round(wall, 1),
    }
    print(json.dumps(result))


def cmd_read(args: argparse.Namespace) -> None:
    from dreamvideo_cli import media

    rng = np.random.default_rng(args.seed)
    count, stride = 32, 4  # 32 frames at 8 fps from 30 fps
    with media.open_clip(args.clip, backend="pyav") as probe:
        total = probe.frames
    starts = [int(s) for s in rng.integers(0, total - (count - 1) * stride, size=args.repeats)]
    for backend in ("decord", "pyav"):
        opens, reads = [], []
        for start in starts:
            indices = list(range(start, start + count * stride, stride))
            began = time.monotonic()
            with media.open_clip(args.clip, backend=backend) as reader:
                opened = time.monotonic()
                frames = reader.read(indices, 256, 256)
                reads.append(time.monotonic() - opened)
            opens.append(opened - began)
            assert frames.shape == (count, 256, 256, 3)
        totals = [o + r for o, r in zip(opens, reads, strict=True)]
        summary = {
            "backend": backend, "starts": starts, "total_s": [round(t, 2) for t in totals],
            "mean_total_s": round(float(np.mean(totals)), 2), "mean_open_s": round(float(np.mean(opens)), 2),
            "mean_read_s": round(float(np.mean(reads)), 2),
        }  # fmt: skip
        print(json.dumps(summary))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write the 10-second and 10-minute clips")
    make.add_argument("-o", "--output", dest="out", type=Path, required=True)
    learn = sub.add_parser("learn", help="peak memory and wall time of dv motion learn on a folder")
    learn.add_argument("--clips", type=Path, required=True)
    learn.add_argument("--python", help="the interpreter of the checkout to measure (default: this one)")
    read = sub.add_parser("read", help="32 frames at 8 fps from random starts, decord against PyAV")
    read.add_argument("--clip", type=Path, required=True)
    read.add_argument("--repeats", type=int, default=5)
    read.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    {"make": cmd_make, "learn": cmd_learn, "read": cmd_read}[args.command](args)


if __name__ == "__main__":
    main()
