"""Writing videos: H.264 mp4 (PyAV) or looping GIF (Pillow), atomically, with their metadata
inside the file and in a JSON sidecar; reading that metadata back."""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.media._files import UInt8Array, reason
from dv_registry.fsutil import replace_durably, tmp_path_for


def check_frames(frames: npt.NDArray[Any]) -> UInt8Array:
    """Validate uint8 [F, H, W, 3] frames."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0:
        raise ValueError(f"expected uint8 frames [F>0, H, W, 3], got {arr.dtype} {arr.shape}")
    return arr


def _sidecar(path: Path) -> Path:
    """Where a video's metadata JSON lives: `out.mp4` -> `out.mp4.json`."""
    return path.with_name(path.name + ".json")


def _write_mp4(tmp: Path, frames: UInt8Array, fps: float, comment: str | None) -> None:
    """Encode H.264 yuv420p, padding odd sizes by repeating the last row/column."""
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    # faststart puts the index first so browsers can play the file while it downloads.
    options = {"movflags": "+faststart"}
    with av.open(str(tmp), mode="w", format="mp4", container_options=options) as container:
        if comment is not None:
            container.metadata["comment"] = comment
        stream = container.add_stream(
            # One encoder thread: x264's output depends on its thread count, which it picks
            # from the CPUs a process may use, so the same frames could encode differently in
            # different processes (an evaluation grid split by accelerate scored them apart).
            "libx264",
            rate=rate,
            options={"crf": "18", "preset": "medium", "threads": "1"},
        )
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        # Convert with the BT.709 matrix and say so: untagged files are guessed as
        # BT.601 or BT.709 depending on the player and the size, shifting colours.
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        context.color_range = ColorRange.MPEG
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
            )
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))


def _write_gif(tmp: Path, frames: UInt8Array, fps: float, comment: str | None) -> None:
    """Pillow GIF that loops forever (identical consecutive frames get merged by Pillow)."""
    images = [Image.fromarray(f, "RGB") for f in frames]
    extra: dict[str, Any] = {"comment": comment} if comment is not None else {}
    images[0].save(
        tmp,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
        **extra,
    )


def write_video(
    path: str | os.PathLike[str],
    frames: npt.NDArray[Any],
    fps: float,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write uint8 frames [F, H, W, 3] to .mp4 or .gif atomically, with metadata JSON in it and beside it."""
    path = Path(path)
    arr = check_frames(frames)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    writers = {".mp4": _write_mp4, ".gif": _write_gif}
    if suffix not in writers:
        raise DVError(
            f"cannot write {path.name}: unknown video format {suffix or '(none)'}",
            "use .mp4 or .gif",
        )
    comment = None if metadata is None else json.dumps(metadata, sort_keys=True, default=str)
    sidecar = _sidecar(path)
    temps: list[Path] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        video_tmp = tmp_path_for(path.parent, path.name)
        temps.append(video_tmp)
        writers[suffix](video_tmp, arr, fps, comment)
        sidecar_tmp: Path | None = None
        if metadata is not None:
            sidecar_tmp = tmp_path_for(sidecar.parent, sidecar.name)
            temps.append(sidecar_tmp)
            text = json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n"
            sidecar_tmp.write_text(text, encoding="utf-8")
        # Old sidecar out first: a crash at any point then leaves a video whose
        # metadata (sidecar, or else its own comment) describes that very video.
        sidecar.unlink(missing_ok=True)
        replace_durably(video_tmp, path)
        if sidecar_tmp is not None:
            replace_durably(sidecar_tmp, sidecar)
    except (av.error.FFmpegError, OSError) as exc:
        hint = "check the disk and the path"
        raise DVError(f"cannot write video {path}: {reason(exc)}", hint) from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return path


def read_video_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata `write_video` stored: the sidecar JSON first, else the file's comment."""
    path = Path(path)
    sidecar = _sidecar(path)
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            return data
    if not path.is_file():
        return None
    comment: Any = None
    try:
        if path.suffix.lower() == ".gif":
            with Image.open(path) as img:
                comment = img.info.get("comment")
        else:
            with av.open(str(path), mode="r") as container:
                comment = container.metadata.get("comment")
    except Exception:
        return None
    if isinstance(comment, bytes):
        comment = comment.decode("utf-8", errors="replace")
    if not comment:
        return None
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
