"""The motion adapter's training data (paper Sec. 3.3), encoded once: every clip's latents and
appearance embeddings, and the batches each step draws from them.

Each step takes `frames` frames of a clip at the target fps from a random start, and the
CLIP image embedding of one random frame of that window as the appearance condition, so
the adapter is pushed to learn how things move rather than what they look like.

Frozen work happens once, before the first step, and streams: a clip is decoded in order
(`ClipReader.forward`: one forward pass, one decoded frame held at a time), encoded (VAE
latents, appearance embeddings) and freed `ENCODE_CHUNK` frames at a time, so what stays
resident is the latent cache, never the clip's pixels. decord (random access) only probes
the clips here: every frame a run can use is read, so one pass in order is the cheapest.
Which source frames are encoded:

- per-frame codec (ModelScope): every frame. A window may start at any frame (the paper's
  sampler draws the start uniformly, and a looped short clip any phase of its stride), so
  every frame can be in a window and any frame of a window can be the appearance frame.
  Encoding only the stride's phase 0 would cut the work by the stride (4 for 30 fps at
  8 fps) but would change which windows training sees; the cache costs C*h*w + C' floats
  per frame (ModelScope at 256x256: 20 KB, 370 MB for a 10-minute 30 fps clip).
- temporal codec (Wan): only the frames of the fixed windows (`clip_windows`), each
  window one chunk; their appearance embeddings are kept per window position.

The cache stays on the training device unless it would take more than a quarter of the
GPU's free memory; then it lives in CPU memory and each step copies its window over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreamvideo_cli import media
from dreamvideo_cli.backbone import Components, VideoFormat
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.events import EventHandler, Note, StageFinished, StageStarted, StepDone
from dreamvideo_cli.memory.placement import use
from dreamvideo_cli.run_layout import Stage
from dreamvideo_cli.runtime import (
    autocast,
    dropped_words,
    encode_appearance,
    encode_text,
    overflow_warning,
    to_tensor_images,
    tokenize,
)

# Source frames decoded, encoded and freed at a time. A multiple of the frame VAE's and the
# appearance encoder's own batches (16 and 32), so each network sees the batches it saw when
# a whole clip was encoded at once, and the latents are the same to the bit.
ENCODE_CHUNK = 32


@dataclass
class EncodedClip:
    path: Path
    stride: int
    # A per-frame codec: [N_source, C, h, w], every source frame (any window can be cut).
    # A temporal codec: [W, C, F', h, w], fixed windows encoded whole (`window_frames`).
    latents: torch.Tensor
    # Per-frame: [N_source, C'], every source frame; temporal: [W, F, C'], each window's frames.
    appearance: torch.Tensor
    caption_index: int
    window_frames: list[list[int]] | None = None


def clip_windows(num_source_frames: int, frames: int, stride: int) -> list[list[int]]:
    """The windows a temporal codec encodes, once: `frames` source frames `stride` apart,
    back to back from the clip's start (a clip too short for one is looped).

    A causal video VAE encodes a window's first frame alone, so the latents of a window
    are not a slice of the whole clip's latents: windows are fixed at caching time, as
    musubi-tuner's "chunk" frame extraction does, instead of cut at any start per step."""
    span = (frames - 1) * stride + 1
    if span > num_source_frames:
        return [media.sample_frame_indices(num_source_frames, frames, stride, np.random.default_rng(0))]
    return [
        [start + i * stride for i in range(frames)] for start in range(0, num_source_frames - span + 1, frames * stride)
    ]


class _Progress:
    """StepDone events for the encoding stage, one per chunk, against a total known up front."""

    def __init__(self, total: int, on_event: EventHandler) -> None:
        self.total, self.done, self.on_event = total, 0, on_event

    def step(self) -> None:
        self.done += 1
        # A clip that turns out shorter than its header said finishes early, never late.
        self.on_event(StepDone("encoding", min(self.done, self.total), self.total))


def _cache_device(
    parts: Components, fmt: VideoFormat, plans: list[list[list[int]] | None], frames: list[int]
) -> torch.device:
    """Where the latent cache lives: the training device, unless on a GPU it would take more
    than a quarter of the free memory (training needs the rest); then CPU memory, from which
    each step copies its window (a few MB) to the GPU."""
    if parts.device.type != "cuda":
        return parts.device
    h, w = parts.codec.latent_size(fmt.height, fmt.width)
    per_frame = parts.codec.channels * h * w + parts.appearance_dim
    # Temporal windows hold F' latent frames but F appearance rows: count F for both (an upper bound).
    count = sum(len(p) * len(p[0]) if p else n for p, n in zip(plans, frames, strict=True))
    free, _ = torch.cuda.mem_get_info(parts.device)
    return parts.device if 4 * count * per_frame * 4 <= free else torch.device("cpu")


def _encode_frames(
    parts: Components, reader: media.ClipReader, fmt: VideoFormat, cache: torch.device, progress: _Progress
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every source frame's latents [N, C, h, w] and appearance embedding [N, C'], a chunk at a time."""
    latents: torch.Tensor | None = None
    appearance: torch.Tensor | None = None
    end = 0
    for start, frames in reader.chunks(ENCODE_CHUNK, fmt.height, fmt.width):
        pixels = to_tensor_images(frames, parts.device)  # [n, 3, H, W] in [0, 1]
        lat = parts.codec.encode_images(pixels)[:, :, 0]  # [n, C, h, w]
        app = encode_appearance(parts, pixels)  # [n, C']
        if latents is None or appearance is None:
            # Filled in place: growing a list and concatenating would hold the cache twice.
            latents = torch.empty((reader.frames, *lat.shape[1:]), dtype=lat.dtype, device=cache)
            appearance = torch.empty((reader.frames, *app.shape[1:]), dtype=app.dtype, device=cache)
        end = start + len(frames)
        latents[start:end] = lat.to(cache)
        appearance[start:end] = app.to(cache)
        del frames, pixels, lat, app
        progress.step()
    if latents is None or appearance is None:
        raise DVError(f"clip {reader.path} has no frames", "re-encode it or remove it")
    return latents[:end], appearance[:end]


def _encode_windows(
    parts: Components,
    reader: media.ClipReader,
    fmt: VideoFormat,
    windows: list[list[int]],
    cache: torch.device,
    progress: _Progress,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A temporal codec's fixed windows, one at a time: latents [W, C, F', h, w] and the
    appearance embeddings of each window's frames [W, F, C']."""
    latents: torch.Tensor | None = None
    appearance: torch.Tensor | None = None
    for w, window in enumerate(windows):
        pixels = to_tensor_images(reader.read(window, fmt.height, fmt.width), parts.device)  # [F, 3, H, W]
        lat = parts.codec.encode_video(pixels)  # [C, F', h, w]
        app = encode_appearance(parts, pixels)  # [F, C']
        if latents is None or appearance is None:  # filled in place, as in _encode_frames
            latents = torch.empty((len(windows), *lat.shape), dtype=lat.dtype, device=cache)
            appearance = torch.empty((len(windows), *app.shape), dtype=app.dtype, device=cache)
        latents[w], appearance[w] = lat.to(cache), app.to(cache)
        del pixels, lat, app
        progress.step()
    if latents is None or appearance is None:
        raise DVError(f"clip {reader.path} has no frames", "re-encode it or remove it")
    return latents, appearance


@dataclass
class MotionBatch:
    x0: torch.Tensor  # clean latents [B, C, F', h, w]
    appearance: torch.Tensor  # the guide frame's embedding, or zeros (image dropout) [B, C']
    context: torch.Tensor  # the caption's text embedding, or the empty prompt's (text dropout) [B, T, D]


class MotionClips:
    """Every clip of a motion, encoded once (`encode`), and the batches drawn from it (`batch`)."""

    def __init__(self, clips: list[EncodedClip], contexts: torch.Tensor, frames: int, preview: np.ndarray) -> None:
        self.clips = clips
        self.contexts = contexts  # [K + 1, T, D]: each distinct caption, then the empty prompt
        self.frames = frames
        self.preview = preview  # the first clip's first window at the target fps, uint8 [F, H, W, 3]

    @classmethod
    def encode(
        cls,
        parts: Components,
        fmt: VideoFormat,
        infos: list[media.ClipInfo],
        captions: list[str],
        frames: int,
        fps: int,
        on_event: EventHandler,
        backbone_name: str,
    ) -> MotionClips:
        """Latents and appearance embeddings of every clip (streamed, `ENCODE_CHUNK` frames at a
        time), and the text embedding of every caption and of the empty prompt (text dropout)."""
        texts = sorted(set(captions))
        for text in texts:  # a caption longer than the text encoder reads is cut: say so
            if words := dropped_words(parts, text):
                on_event(Note(overflow_warning(parts, backbone_name, "a caption", words), "warning"))
        temporal = parts.codec.temporal_factor != 1
        strides = [media.frame_stride(info.fps, fps) for info in infos]
        plans = [clip_windows(i.frames, frames, s) if temporal else None for i, s in zip(infos, strides, strict=True)]
        chunks = [len(w) if w is not None else -(-i.frames // ENCODE_CHUNK) for i, w in zip(infos, plans, strict=True)]
        cache = _cache_device(parts, fmt, plans, [info.frames for info in infos])
        progress = _Progress(sum(chunks), on_event)
        on_event(
            StageStarted(
                Stage.ENCODING,
                progress.total,
                f"encoding {len(infos)} clip{'' if len(infos) == 1 else 's'} once, {ENCODE_CHUNK} frames at a time",
                unit="chunk",
            )
        )
        clips: list[EncodedClip] = []
        preview: np.ndarray | None = None
        use(parts, "codec", "appearance")
        for info, stride, caption in zip(infos, strides, captions, strict=True):
            with media.open_clip(info.path) as reader:
                stream = reader.forward()  # frames in order: one forward pass, flat memory
                if preview is None:
                    preview = stream.read(list(range(0, stream.frames, stride))[:frames], fmt.height, fmt.width)
                windows = clip_windows(stream.frames, frames, stride) if temporal else None
                if windows is not None:
                    latents, appearance = _encode_windows(parts, stream, fmt, windows, cache, progress)
                else:
                    latents, appearance = _encode_frames(parts, stream, fmt, cache, progress)
            clips.append(EncodedClip(info.path, stride, latents, appearance, texts.index(caption), windows))
        on_event(StageFinished(Stage.ENCODING))
        with torch.no_grad(), autocast(parts.device):
            contexts = encode_text(parts, tokenize(parts, [*texts, ""])).float()  # [K + 1, T, D]
        parts.text.release()
        use(parts)  # every part back to the host until training places the denoiser
        assert preview is not None  # media.list_clips refuses a folder without clips
        return cls(clips, contexts, frames, preview)

    def batch(
        self, size: int, rng: np.random.Generator, text_dropout: float, image_dropout: float, device: torch.device
    ) -> MotionBatch:
        """`size` windows of `frames` frames from random clips, each with the embedding of one
        random frame of its window as appearance guidance; the guide and the caption are each
        dropped with their probability."""
        x0, guides, captions = [], [], []
        for _ in range(size):
            clip = self.clips[int(rng.integers(len(self.clips)))]
            if clip.window_frames is None:
                idx = media.sample_frame_indices(len(clip.latents), self.frames, clip.stride, rng)
                x0.append(clip.latents[idx].permute(1, 0, 2, 3))  # [C, F, h, w]
                frame_appearance = clip.appearance[idx]  # [F, C']
            else:
                w = int(rng.integers(len(clip.window_frames)))
                idx = clip.window_frames[w]
                x0.append(clip.latents[w])  # [C, F', h, w]
                frame_appearance = clip.appearance[w]  # [F, C']
            guide = frame_appearance[int(rng.integers(len(idx)))]  # a random frame of the window
            guides.append(torch.zeros_like(guide) if rng.random() < image_dropout else guide)
            captions.append(len(self.contexts) - 1 if rng.random() < text_dropout else clip.caption_index)
        # The cache may live in CPU memory (a long clip on a small GPU): move the batch over.
        return MotionBatch(
            torch.stack(x0).to(device),
            torch.stack(guides).to(device),
            self.contexts[torch.tensor(captions, device=device)],
        )
