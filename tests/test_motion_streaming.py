"""Motion learning streams its clips: frames are decoded, encoded and freed a chunk at a
time, the encoding stage reports progress per chunk, and chunking changes no number."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import pytest
import torch

from dreamvideo_cli import media
from dreamvideo_cli.cli import main
from dreamvideo_cli.events import EventLog, StageStarted, StepDone
from dreamvideo_cli.learn import MotionConfig, learn_motion
from dreamvideo_cli.learn import motion_data as motion_module
from dreamvideo_cli.media import decoders

try:
    from tests.media_fixtures import index_frame, write_clip
except ImportError:
    from media_fixtures import index_frame, write_clip  # type: ignore[no-redef,import-not-found]

LONG = 400  # frames: 13 chunks of 32, enough that holding them all would show


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dvhome"
    monkeypatch.setenv("DV_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("long")
    write_clip(folder / "long.mp4", frames=LONG, fps=30, width=64, height=48, marker=True)
    return folder


def config(**overrides: Any) -> MotionConfig:
    fields: dict[str, Any] = dict(backbone="tiny", steps=2, frames=8, save_every=0, log_every=1, seed=4, device="cpu")
    return MotionConfig(**{**fields, **overrides})


def test_a_long_clip_is_never_resident_and_every_frame_is_decoded_once(
    home: Path, long_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dv_registry import Registry

    decoded: list[tuple[str, int]] = []  # (backend, frames) per decode step
    resident: list[int] = []  # frames per tensor handed to the encoders
    collect, to_tensor = decoders.ClipReader._collect, motion_module.to_tensor_images

    def counting_collect(self: decoders.ClipReader, indices: list[int], *args: Any) -> dict[int, Any]:
        decoded.append((self.backend, len(indices)))
        return collect(self, indices, *args)

    def counting_to_tensor(images: Any, device: torch.device) -> torch.Tensor:
        resident.append(len(images))
        return to_tensor(images, device)

    monkeypatch.setattr(decoders.ClipReader, "_collect", counting_collect)
    monkeypatch.setattr(motion_module, "to_tensor_images", counting_to_tensor)
    events = EventLog()
    learn_motion(long_clip, "long", config(), registry=Registry(home), on_event=events)

    chunk = motion_module.ENCODE_CHUNK
    assert max(n for _, n in decoded) <= chunk and max(resident) <= chunk
    # Every frame once, in order, through the forward reader (decord would queue decoded
    # frames ahead without bound), plus the preview's few; decord only probed the clip.
    preview = len(range(0, LONG, media.frame_stride(30, 8))[:8])
    assert {backend for backend, _ in decoded} == {"pyav"}
    assert sum(n for _, n in decoded) == LONG + preview
    total = math.ceil(LONG / chunk)
    started = [e for e in events.of_type(StageStarted) if e.stage == "encoding"]
    assert [e.total_steps for e in started] == [total]  # type: ignore[attr-defined]
    steps = [(e.step, e.total_steps) for e in events.of_type(StepDone) if e.stage == "encoding"]  # type: ignore[attr-defined]
    assert steps == [(k, total) for k in range(1, total + 1)]  # the bar moves, chunk by chunk


def test_streamed_latents_are_the_whole_clip_latents_to_the_bit(
    long_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dreamvideo_cli.learn.trainer import open_backbone
    from dreamvideo_cli.runtime import encode_appearance, prepare_denoiser, to_tensor_images

    backbone, _ = open_backbone(config())
    parts = backbone.load("cpu")
    prepare_denoiser(parts)
    fmt = backbone.video_format
    # How every clip was encoded before streaming: all frames decoded, one tensor, one call each.
    pixels = to_tensor_images(media.read_frames(long_clip / "long.mp4", None, fmt.height, fmt.width), parts.device)
    want_latents, want_appearance = parts.codec.encode_images(pixels)[:, :, 0], encode_appearance(parts, pixels)
    for chunk in (motion_module.ENCODE_CHUNK, 64):  # any multiple of the encoders' own batches
        monkeypatch.setattr(motion_module, "ENCODE_CHUNK", chunk)
        progress = motion_module._Progress(math.ceil(LONG / chunk), lambda event: None)
        with media.open_clip(long_clip / "long.mp4") as reader:
            latents, appearance = motion_module._encode_frames(parts, reader, fmt, parts.device, progress)
        assert progress.done == progress.total
        assert torch.equal(latents, want_latents) and torch.equal(appearance, want_appearance)


def test_the_cache_leaves_a_crowded_gpu_for_cpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamvideo_cli.backbone import VideoFormat

    codec = SimpleNamespace(channels=4, latent_size=lambda h, w: (h // 8, w // 8))
    parts: Any = SimpleNamespace(device=torch.device("cuda"), codec=codec, appearance_dim=1024)
    fmt = VideoFormat(height=256, width=256, frames=32, fps=8)
    per_frame = (4 * 32 * 32 + 1024) * 4  # bytes of latents and embedding
    free = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 << 30))
    free["bytes"] = 4 * 18_000 * per_frame
    assert motion_module._cache_device(parts, fmt, [None], [18_000]) == torch.device("cuda")
    free["bytes"] -= 1
    assert motion_module._cache_device(parts, fmt, [None], [18_000]) == torch.device("cpu")
    parts.device = torch.device("cpu")
    assert motion_module._cache_device(parts, fmt, [None], [18_000]) == torch.device("cpu")


def live_webm(path: Path, frames: int) -> Path:
    """A WebM as browsers record it (no duration in the header): decord cannot open it."""
    with av.open(str(path), "w", format="webm", container_options={"live": "1"}) as container:
        stream = container.add_stream("libvpx-vp9", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(index_frame(i, 48, 64), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()]


def registry_entries(home: Path) -> list[Path]:
    return sorted((home / "manifests").rglob("*.json")) if (home / "manifests").exists() else []


def test_cli_reads_what_only_pyav_opens_and_refuses_what_neither_does(
    home: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    fast = ["--backbone", "tiny", "--adapter-steps", "1", "--frames", "8", "--device", "cpu", "--json"]
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    live_webm(recorded / "browser.webm", 20)
    assert media.open_clip(recorded / "browser.webm").backend == "pyav"
    assert main(["motion", "learn", str(recorded), "--name", "recorded", *fast]) == 0
    capfd.readouterr()
    assert len(registry_entries(home)) == 2  # v1 and latest

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 20)
    code = main(["motion", "learn", str(broken), "--name", "broken", *fast])
    out, err = capfd.readouterr()  # file-descriptor level: decord's C++ logging would show here
    assert code != 0 and out == ""
    assert len(lines(err)) == 1 and lines(err)[0].startswith("error: ") and "clip.mp4" in err, err
    assert len(registry_entries(home)) == 2
