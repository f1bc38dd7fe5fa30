"""Motion learning (paper Sec. 3.3): the motion adapter with appearance guidance.

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

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import Components, VideoFormat
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.events import (
    EventHandler,
    Note,
    StageFinished,
    StageStarted,
    StepDone,
    ignore_events,
)
from dreamvideo_cli.learn.common import (
    AdamWWithWarmup,
    StopRequested,
    begin_run,
    checkpoint_path,
    diffusion_loss,
    generator_for,
    load_for_training,
    open_backbone,
    preview_due,
    resumed_config,
    run_stage,
    write_preview,
)
from dreamvideo_cli.learn.store import check_new_name, store_adapter
from dreamvideo_cli.runtime import (
    autocast,
    encode_appearance,
    encode_text,
    quiet_libraries,
    to_tensor_images,
    tokenize,
)
from dreamvideo_cli.speed import compiled_unet, gradient_checkpointing


@dataclass
class MotionConfig:
    """Defaults are the authors' (reference-implementation.md, "Hyper-parameters")."""

    backbone: str = "modelscope"
    backbone_path: str | None = None
    random_weights: bool = False
    phrase: str | None = None  # None: the motion's name with dashes as spaces
    steps: int = 1000
    frames: int | None = None  # None: the backbone's (the paper's 32 at 8 fps; Wan: 33 at 16)
    fps: int | None = None
    batch_size: int = 1
    lr: float = 1e-5
    text_dropout: float = 0.5
    image_dropout: float = 0.1  # p_image_zero; the authors used 0 to 0.5
    appearance_strength: float = 1.0  # lambda
    warmup_steps: int = 10
    weight_decay: float = 0.0
    offset_noise: float = 0.1
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    compile: bool = False  # torch.compile the denoiser (CUDA graphs on a GPU); same math
    adapter_width: int | None = None  # the motion adapter's bottleneck; None: the backbone's default
    preview_every: int = 0  # compose a preview every K steps (and at the end); 0: none
    preview_prompt: str | None = None  # None: the run's own caption (the motion phrase)
    save_every: int = 500
    log_every: int = 10
    seed: int | None = None
    device: str = "auto"
    description: str = ""


# Source frames decoded, encoded and freed at a time. A multiple of the frame VAE's and the
# appearance encoder's own batches (16 and 32), so each network sees the batches it saw when
# a whole clip was encoded at once, and the latents are the same to the bit.
ENCODE_CHUNK = 32


@dataclass
class _Clip:
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


def learn_motion(
    clips_dir: str | Path,
    name: str,
    config: MotionConfig,
    *,
    registry: Any,
    on_event: EventHandler = ignore_events,
    resume: str | None = None,
) -> Any:
    """Learn the motion `name` from the clips in `clips_dir`; returns the registry manifest."""
    quiet_libraries()
    started = time.monotonic()
    resumed = None
    if resume is not None:
        resumed, config, name, clips_dir = resumed_config(
            registry.home, resume, "motion", MotionConfig, config, on_event
        )
    check_new_name(registry, "motion", name)

    # --- data: validate everything before touching the model ---------------------------
    folder = Path(clips_dir)
    paths = media.list_clips(folder)
    infos = [media.probe_clip(p) for p in paths]
    captions = media.read_captions(folder, paths)
    phrase = config.phrase or name.replace("-", " ").replace("_", " ")
    backbone, fingerprint = open_backbone(config)
    fmt = backbone.video_format
    config.frames = config.frames or backbone.motion_frames
    config.fps = config.fps or backbone.motion_fps
    n_frames, fps = config.frames, config.fps
    backbone.check_frames(n_frames)
    for info in infos:
        if info.frames < n_frames * media.frame_stride(info.fps, fps):
            on_event(Note(f"{info.path.name} is shorter than {n_frames} frames at {fps} fps; it will loop", "warning"))

    run = begin_run(registry.home, "motion", name, config, folder, resumed, on_event)
    parts, sites = load_for_training(backbone, fingerprint, config.device, on_event)
    device = parts.device

    # --- frozen work, once, streamed: latents and appearance embeddings ------------------
    caption_texts = sorted({captions.get(p) or phrase for p in paths})
    for text in caption_texts:  # a caption longer than the text encoder reads is cut: say so
        if dropped := parts.text.overflow(text):
            words = parts.tokenizer.decode(dropped).strip()
            on_event(
                Note(
                    f"a caption is longer than {backbone.name}'s text encoder reads ({parts.text.max_length} tokens); it is cut before: {words!r}",
                    "warning",
                )
            )
    temporal = parts.codec.temporal_factor != 1
    strides = [media.frame_stride(info.fps, fps) for info in infos]
    plans = [
        clip_windows(info.frames, n_frames, s) if temporal else None for info, s in zip(infos, strides, strict=True)
    ]
    chunks = [
        len(w) if w is not None else -(-info.frames // ENCODE_CHUNK) for info, w in zip(infos, plans, strict=True)
    ]
    cache = _cache_device(parts, fmt, plans, [info.frames for info in infos])
    progress = _Progress(sum(chunks), on_event)
    on_event(
        StageStarted("encoding", progress.total, f"encoding {len(paths)} clip(s) once, {ENCODE_CHUNK} frames at a time")
    )
    clips: list[_Clip] = []
    preview_frames: np.ndarray | None = None
    for path, stride in zip(paths, strides, strict=True):
        with media.open_clip(path) as reader:
            stream = reader.forward()  # frames in order: one forward pass, flat memory
            if preview_frames is None:
                preview_frames = stream.read(list(range(0, stream.frames, stride))[:n_frames], fmt.height, fmt.width)
            if temporal:
                windows = clip_windows(stream.frames, n_frames, stride)
                latents, appearance = _encode_windows(parts, stream, fmt, windows, cache, progress)
            else:
                windows = None
                latents, appearance = _encode_frames(parts, stream, fmt, cache, progress)
        clips.append(
            _Clip(path, stride, latents, appearance, caption_texts.index(captions.get(path) or phrase), windows)
        )
    on_event(StageFinished("encoding"))

    # Frozen text: every caption and the empty prompt (text dropout), encoded once.
    with torch.no_grad(), autocast(device):
        contexts = encode_text(parts, tokenize(parts, [*caption_texts, ""])).float()  # [K+1, T, D]
    parts.text.release()
    empty_index = len(caption_texts)

    gen = generator_for(device, config.seed or 0)
    rng = np.random.default_rng(config.seed)
    design = backbone.adapter_design
    if config.adapter_width is not None:
        design = replace(design, motion_bottleneck=config.adapter_width)
    motion = AdapterSet.for_backbone("motion", sites, parts.appearance_dim, design).to(device)
    motion.set_strength(config.appearance_strength)
    motion.attach(parts.denoiser)
    optimizer = AdamWWithWarmup(motion.parameters(), config.lr, config.weight_decay, config.warmup_steps)
    step, checkpoints = 0, []
    if resume is not None:
        tensors, meta = run.load_state()
        step, checkpoints = int(meta["step"]), list(meta["checkpoints"])
        motion.load_adapter_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("adapter.")})
        optimizer.restore(tensors, meta["optimizer"], step)
        gen.set_state(tensors["rng.generator"].to(torch.uint8).cpu())
        rng.bit_generator.state = meta["numpy_rng"]
        run.truncate_losses("motion", step)
        on_event(Note(f"resuming motion at step {step}"))

    def save_state(step: int) -> None:
        opt_tensors, opt_scalars = optimizer.state()
        tensors = {
            "rng.generator": gen.get_state(),
            **{f"adapter.{k}": v for k, v in motion.adapter_state_dict().items()},
            **opt_tensors,
        }
        run.save_state(
            tensors,
            {
                "stage": "motion",
                "step": step,
                "optimizer": opt_scalars,
                "checkpoints": checkpoints,
                "numpy_rng": rng.bit_generator.state,
            },
        )

    def sample_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0, e, ctx = [], [], []
        for _ in range(config.batch_size):
            clip = clips[int(rng.integers(len(clips)))]
            if clip.window_frames is None:
                idx = media.sample_frame_indices(len(clip.latents), n_frames, clip.stride, rng)
                x0.append(clip.latents[idx].permute(1, 0, 2, 3))  # [C, F, h, w]
                frame_appearance = clip.appearance[idx]  # [F, C']
            else:
                w = int(rng.integers(len(clip.window_frames)))
                idx = clip.window_frames[w]
                x0.append(clip.latents[w])  # [C, F', h, w]
                frame_appearance = clip.appearance[w]  # [F, C']
            guide = frame_appearance[int(rng.integers(len(idx)))]  # a random frame of the window
            e.append(torch.zeros_like(guide) if rng.random() < config.image_dropout else guide)
            ctx.append(empty_index if rng.random() < config.text_dropout else clip.caption_index)
        # The cache may live in CPU memory (a long clip on a small GPU): move the batch over.
        return torch.stack(x0).to(device), torch.stack(e).to(device), contexts[torch.tensor(ctx, device=device)]

    def motion_loss() -> torch.Tensor:
        x0, e, context = sample_batch()  # [B, C, F', h, w], [B, C'], [B, T, D]
        motion.set_appearance(e)
        with autocast(device):
            return diffusion_loss(parts, x0, context.to(parts.dtype), gen, config.offset_noise, model=model)

    preview_prompt = config.preview_prompt or phrase

    def preview(step: int) -> None:
        if preview_due(config.preview_every, step, config.steps):
            # Composed as `dv compose - MOTION` does: no subject, a zero appearance embedding.
            motion.set_appearance(torch.zeros(2, parts.appearance_dim, device=device))
            write_preview(parts, backbone, run, f"step{step}", preview_prompt, n_frames, on_event)

    stop = StopRequested()
    on_event(StageStarted("motion", config.steps, f"motion adapter ({motion.parameter_count():,} parameters)"))
    model = compiled_unet(parts.denoiser, config.compile, device)  # the same module, maybe compiled
    with stop.installed(), gradient_checkpointing(parts.denoiser, config.gradient_checkpointing, parts.family):
        step = run_stage(
            run=run, stage="motion", step=step, total=config.steps, optimizer=optimizer, loss_fn=motion_loss,
            stop=stop, save_state=save_state, on_event=on_event, log_every=config.log_every,
            checkpoints=checkpoints, save_every=config.save_every, adapters=motion, after_step=preview,
        )  # fmt: skip
        save_state(step)
    on_event(StageFinished("motion"))
    motion.detach()
    run.save_loss_plot()

    from PIL import Image

    assert preview_frames is not None
    first_frames = [Image.fromarray(f) for f in preview_frames[:1]]
    return store_adapter(
        registry,
        kind="motion",
        name=name,
        backbone=backbone,
        adapters=motion,
        extra_tensors=None,
        checkpoints={f"step{s}": checkpoint_path(run, s) for s in checkpoints},
        fields={
            "phrase": phrase,
            "training": {**asdict(config), "run": run.id, "clips": [p.name for p in paths], "captions": caption_texts},
            "seed": config.seed,
            "dataset_digest": media.dataset_digest(paths),
            "duration_s": round(time.monotonic() - started, 2),
            "description": config.description,
        },
        reference_images=[(paths[0], img) for img in first_frames],
        preview=media.contact_sheet(preview_frames, columns=8, max_frames=16, label=f"{name}: {phrase}"),
    )
