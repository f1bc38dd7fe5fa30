#!/usr/bin/env bash
# Run on a machine with network access before scripts/gpu-checks.sh on a machine with a GPU
# and no network: fills .whl/ with Python 3.12 wheels of the dependencies listed below
# (every other dependency of dv, torch and transformers among them, must already be
# installed there), and .gpu-data/ with a few photos and a clip to learn from. Both
# folders are git-ignored; copy them to the GPU machine with the checkout.
# Sizes: about 46 MB of wheels. decord2 (27 MB) is left out to keep both folders under
# 64 MiB: dreamvideo_cli.media needs PyAV (writing, in-order reads) and falls back to it
# for every read when decord is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .gpu-data
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl diffusers==0.42.1 open-clip-torch==3.3.0 platformdirs pydantic pydantic-core \
    annotated-types typing-inspection ftfy wcwidth av==19.0.2
uv run python - <<'PY'
from pathlib import Path
import numpy as np
from PIL import Image
from dreamvideo_cli import media
out = Path(".gpu-data")
(out / "photos").mkdir(exist_ok=True)
(out / "clips").mkdir(exist_ok=True)
rng = np.random.default_rng(0)
for i in range(4):
    image = np.full((320, 320, 3), (40 + 50 * i, 120, 200), np.uint8)
    image[80:240, 60 + 10 * i : 220 + 10 * i] = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
    Image.fromarray(image).save(out / "photos" / f"p{i}.png")
frames = np.zeros((120, 288, 512, 3), np.uint8)
for t in range(120):
    frames[t, 100:180, (4 * t) % 432 : (4 * t) % 432 + 80] = (230, 180, 40)
media.write_video(out / "clips" / "slide.mp4", frames, fps=24)
print("wrote", sorted(p.name for p in out.rglob("*") if p.is_file()))
PY
du -sh .whl .gpu-data
