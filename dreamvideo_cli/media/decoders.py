"""Decoding clips: decord first (random access by frame index), PyAV when decord cannot
open a file.

decord (the `decord2` distribution) indexes a clip's packets when it opens it, so frames
are read by index, seeking to the nearest keyframe instead of decoding from the start:
a run that needs 32 frames of a 10-minute clip decodes about 32 GOPs, not 18,000 frames.
Its pixels are PyAV's to the byte on every clip the suite reads (same FFmpeg decoders,
same swscale RGB conversion, rotation applied the same way), so either backend gives
the same frames, and both resize through the same Pillow path afterwards.

Frames read in order (every frame of a clip, or windows back to back) go through PyAV's
forward decoder instead (`ClipReader.forward`): decord2 3.4.0's CPU decoder reads ahead
without bound when it is read in order. Its reader thread keeps pushing packets while it
waits for a decoded frame, so the queue of decoded RGB frames grows by about a frame per
frame read (measured on a 1280x720 clip: 7 GB resident after 3,000 frames), and only a seek
to another keyframe empties it. PyAV holds one frame at a time, so memory stays flat
whatever the clip's length; decord is kept for what it is good at, a few frames by index.

PyAV is also the fallback for containers decord refuses: decord needs a frame count or a
duration in the header, so Matroska/WebM written as a live stream (no Duration element,
as browsers' MediaRecorder and OBS write them) and raw elementary streams (`.m4v` MPEG-4,
`.mpg` MPEG-1 video) open only through PyAV. PyAV reads forward (restarting from the
first frame when asked for an earlier one), which is linear for the in-order reads that
encoding does.

Known decord defect handled here: for a few small widths (16, 24, 32, 48 and 96 pixels
among those tried) FFmpeg pads RGB rows, decord reports the padded row as extra channels
and `get_batch` fails (dmlc/decord#336). Such clips are read one frame at a time and the
padding is cut off, which gives the exact pixels.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import av
import av.error
import numpy as np

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.media import _decord
from dreamvideo_cli.media._decord import DecordUnavailable
from dreamvideo_cli.media._files import UInt8Array, reason
from dreamvideo_cli.media.photos import resize_center_crop_array

log = logging.getLogger("dreamvideo_cli.media")

CLIP_HINT = "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`, or remove it"
# Full-size decoded frames held at once by one read (decord returns a batch as one array,
# copied once into numpy): 64 MiB is 23 frames of 1280x720, 2 of 3840x2160.
DECODE_BYTES = 64 << 20
MAX_DECODE_BATCH = 32


@dataclass(frozen=True)
class ClipInfo:
    """What `probe_clip` learns about a clip; width/height are as displayed (after rotation)."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float


class ClipReader(ABC):
    """One open clip: its length, fps and display size, and its frames by index."""

    backend: ClassVar[str]

    def __init__(self, path: Path, frames: int, fps: float, width: int, height: int) -> None:
        self.path = path
        self.frames = frames  # lowered if decoding finds fewer frames than the header said
        self.fps = fps
        self.width = width
        self.height = height

    @property
    def info(self) -> ClipInfo:
        duration = self.frames / self.fps if self.fps > 0 else 0.0
        return ClipInfo(self.path, self.frames, self.fps, self.width, self.height, duration)

    @abstractmethod
    def _decode(self, indices: list[int]) -> Iterator[tuple[int, UInt8Array]]:
        """(index, RGB frame at display size) for sorted unique `indices` below `frames`;
        stops early, lowering `frames`, where the stream ends before its header said."""

    @abstractmethod
    def close(self) -> None:
        """Release the decoder (readers also close when garbage-collected)."""

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def forward(self) -> ClipReader:
        """The reader for frames taken in order (all of them, or windows back to back):
        memory stays at one frame whatever the clip's length (see the module's docstring)."""
        return self

    def batch_size(self) -> int:
        """How many full-size frames one decode step may hold (see DECODE_BYTES)."""
        per_frame = max(1, self.width * self.height * 3)
        return max(1, min(MAX_DECODE_BATCH, DECODE_BYTES // per_frame))

    def _collect(self, indices: list[int], height: int | None, width: int | None) -> dict[int, UInt8Array]:
        """Decode `indices` (sorted, unique), resizing each frame as soon as it is decoded."""
        kept: dict[int, UInt8Array] = {}
        for index, frame in self._decode(indices):
            if height is not None and width is not None:
                frame = resize_center_crop_array(frame, height, width)
            elif frame.shape[:2] != (self.height, self.width):
                # Resolution changes mid-stream happen (screen recordings); unify on the first.
                frame = resize_center_crop_array(frame, self.height, self.width)
            kept[index] = frame
        return kept

    def read(self, indices: Sequence[int] | None, height: int | None = None, width: int | None = None) -> UInt8Array:
        """Frames at `indices` (any order, repeats allowed; None = all) as uint8 [F, H, W, 3],
        resized and centre-cropped to height x width if given. Indices past the clip's end
        (a container that over-promises) wrap around, as `sample_frame_indices` loops."""
        if (height is None) != (width is None):
            raise ValueError("give both height and width, or neither")
        if indices is None:
            chunks = [frames for _, frames in self.forward().chunks(self.batch_size(), height, width)]
            if not chunks:
                raise DVError(f"clip {self.path} has no frames", CLIP_HINT)
            return np.concatenate(chunks)
        order = [int(i) for i in indices]
        if any(i < 0 for i in order):
            raise ValueError("frame indices must be non-negative")
        if not order:
            return np.zeros((0, height or 0, width or 0, 3), dtype=np.uint8)
        kept: dict[int, UInt8Array] = {}
        while True:
            count = self.frames
            if count <= 0:
                raise DVError(f"clip {self.path} has no frames", CLIP_HINT)
            kept.update(self._collect(sorted({i % count for i in order} - kept.keys()), height, width))
            if self.frames == count:
                break  # no early end found: every frame asked for is decoded
            # The stream ended before its header said: wrap around the frames it really has.
        return np.stack([kept[i % count] for i in order]).astype(np.uint8, copy=False)

    def chunks(
        self, size: int, height: int | None = None, width: int | None = None
    ) -> Iterator[tuple[int, UInt8Array]]:
        """Every frame in order, `size` at a time, as (first index, frames [n, H, W, 3]):
        only one chunk is decoded and held at once, by the forward reader."""
        reader = self.forward()
        if reader is not self:
            yield from reader.chunks(size, height, width)
            return
        start = 0
        while start < self.frames:
            end = min(start + max(1, size), self.frames)
            kept = self._collect(list(range(start, end)), height, width)
            end = min(end, self.frames)  # the stream may have ended early
            if end <= start:
                break
            yield start, np.stack([kept[i] for i in range(start, end)])
            start = end


# ---------------------------------------------------------------- PyAV


def _stream_fps(stream: av.VideoStream) -> float:
    """Best frame-rate guess: average, then guessed, then the time-base rate."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0 and math.isfinite(float(rate)):
            return float(rate)
    return 0.0


def _rotate(arr: UInt8Array, degrees: int) -> UInt8Array:
    """Rotate a decoded frame the way players do (display matrix, counter-clockwise)."""
    k = round(degrees / 90) % 4
    return np.ascontiguousarray(np.rot90(arr, k)) if k else arr


_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError)


class PyAVReader(ClipReader):
    """Forward decoding with PyAV; an earlier frame than the last one read restarts it."""

    backend = "pyav"

    def __init__(self, path: Path) -> None:
        self._container: Any = None
        container, stream = self._open(path)
        try:
            declared = int(stream.frames or 0)
            fps = _stream_fps(stream)
            first = next(container.decode(stream), None)
            if first is None:
                raise DVError(f"clip {path} has no frames", CLIP_HINT)
            rotation, width, height = first.rotation, first.width, first.height
            frames = declared if declared > 0 else self._count_packets(path)
            if fps <= 0.0 and container.duration:
                fps = frames / (container.duration / av.time_base)
        except _AV_ERRORS as exc:
            container.close()
            raise DVError(f"cannot decode clip {path}: {reason(exc)}", CLIP_HINT) from None
        except BaseException:
            container.close()
            raise
        container.close()
        if round(rotation / 90) % 2:
            width, height = height, width
        super().__init__(path, frames, fps, width, height)
        self._position = 0  # index of the next frame the decoder yields
        self._frames_iter: Iterator[Any] | None = None

    @staticmethod
    def _open(path: Path) -> tuple[Any, av.VideoStream]:
        try:
            container = av.open(str(path), mode="r")
        except _AV_ERRORS as exc:
            raise DVError(f"cannot read clip {path}: {reason(exc)}", CLIP_HINT) from None
        if not container.streams.video:
            container.close()
            raise DVError(f"clip {path} has no video stream", CLIP_HINT)
        stream = container.streams.video[0]
        # Frame threading makes decoding several times faster on multi-core machines.
        stream.thread_type = "AUTO"
        return container, stream

    def _count_packets(self, path: Path) -> int:
        """Frames of a stream whose header has no count (WebM, live Matroska, raw streams),
        counted from its packets: demuxing is far cheaper than decoding."""
        container, stream = self._open(path)
        try:
            return sum(1 for packet in container.demux(stream) if packet.size)
        finally:
            container.close()

    def _restart(self) -> None:
        self.close()
        self._container, stream = self._open(self.path)
        self._frames_iter = iter(self._container.decode(stream))
        self._position = 0

    def _decode(self, indices: list[int]) -> Iterator[tuple[int, UInt8Array]]:
        if not indices:
            return
        if self._frames_iter is None or indices[0] < self._position:
            self._restart()
        assert self._frames_iter is not None
        pending = iter(indices)
        target = next(pending)
        try:
            while True:
                frame = next(self._frames_iter, None)
                if frame is None:
                    self.frames = self._position  # the header promised more than there is
                    return
                index = self._position
                self._position += 1
                if index == target:
                    rgb = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
                    yield index, _rotate(rgb, frame.rotation)
                    next_target = next(pending, None)
                    if next_target is None:
                        return
                    target = next_target
        except _AV_ERRORS as exc:
            self.close()
            raise DVError(f"cannot decode clip {self.path}: {reason(exc)}", CLIP_HINT) from None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames_iter = None, None


# ---------------------------------------------------------------- decord (loaded by _decord)


class DecordReader(ClipReader):
    """Random access through decord: each read seeks to the keyframe before its first frame."""

    backend = "decord"

    def __init__(self, path: Path) -> None:
        decord = _decord.load()
        with _decord.stderr_captured() as said:
            try:
                reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0)
                first = reader.next().asnumpy()
                reader.seek(0)  # empties the read-ahead queue (see _decode)
            except Exception as exc:  # decord raises RuntimeError, AssertionError, DECORDError
                raise DecordUnavailable(_decord.reason(exc, said.text())) from None
        _decord.give_back_freed_memory()
        frames = len(reader)
        fps = float(reader.get_avg_fps())
        if not (math.isfinite(fps) and fps > 0) and frames > 1:
            stamps = reader.get_frame_timestamp(list(range(frames)))
            span = float(stamps[-1, 1] - stamps[0, 0])
            fps = frames / span if span > 0 else 0.0
        height, width = int(first.shape[0]), int(first.shape[1])
        super().__init__(path, frames, fps if math.isfinite(fps) else 0.0, width, height)
        self._reader: Any = reader
        # Rows padded by FFmpeg show up as extra "channels" (dmlc/decord#336).
        self._padded = first.shape[2] != 3
        self._forward: ClipReader | None = None

    def forward(self) -> ClipReader:
        if self._forward is None:
            try:
                self._forward = PyAVReader(self.path)
            except DVError as exc:  # not seen yet: PyAV opens all decord does
                log.debug("PyAV cannot read %s (%s); reading it in order with decord", self.path, exc)
                self._forward = self
        return self._forward

    def _unpad(self, frame: UInt8Array) -> UInt8Array:
        h, w, c = frame.shape
        return np.ascontiguousarray(frame.reshape(h, w * c)[:, : w * 3].reshape(h, w, 3))

    def _decode(self, indices: list[int]) -> Iterator[tuple[int, UInt8Array]]:
        try:
            yield from self._decode_batches(indices)
        finally:
            # decord's decoder thread goes on decoding every packet its reader pushed ahead
            # (all the rest of the clip, often) while the reader stays open; a seek stops it
            # and drops that queue, and frame 0 is a keyframe, so the seek costs nothing.
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    self._reader.seek(0)
                _decord.give_back_freed_memory()

    def _decode_batches(self, indices: list[int]) -> Iterator[tuple[int, UInt8Array]]:
        batch = self.batch_size()
        for start in range(0, len(indices), batch):
            chunk = indices[start : start + batch]
            if not self._padded:
                try:
                    frames = self._reader.get_batch(chunk).asnumpy()
                except Exception as exc:
                    if "from_size == to_size" not in str(exc):
                        raise DVError(f"cannot decode clip {self.path}: {_decord.reason(exc)}", CLIP_HINT) from None
                    self._padded = True  # rows padded from this frame on: one at a time below
                else:
                    yield from zip(chunk, frames, strict=True)
                    continue
            for index in chunk:
                try:
                    self._reader.seek_accurate(index)  # free when it is the next frame anyway
                    frame = self._unpad(self._reader.next().asnumpy())
                except Exception as exc:
                    raise DVError(f"cannot decode clip {self.path}: {_decord.reason(exc)}", CLIP_HINT) from None
                yield index, frame

    def close(self) -> None:
        if self._forward is not None and self._forward is not self:
            self._forward.close()
        self._reader, self._forward = None, None


def open_clip(path: str | os.PathLike[str], backend: str = "auto") -> ClipReader:
    """Open a clip for reading by frame index: decord, else PyAV (`backend` "decord" or
    "pyav" forces one). Anything neither can read is a DVError naming the file."""
    path = Path(path)
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown backend {backend!r}: use auto, decord or pyav")
    if not path.exists():
        raise DVError(f"clip {path} does not exist", "check the path")
    if backend != "pyav":
        try:
            return DecordReader(path)
        except DecordUnavailable as exc:
            if backend == "decord":
                raise DVError(f"decord cannot read clip {path}: {exc}", CLIP_HINT) from None
            log.debug("decord cannot open %s (%s); reading it with PyAV", path, exc)
    return PyAVReader(path)
