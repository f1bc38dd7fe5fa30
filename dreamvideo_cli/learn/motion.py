"""Motion learning (paper Sec. 3.3): the motion adapter with appearance guidance.

Each step takes `frames` frames of a clip at the target fps from a random start, and the
CLIP image embedding of one random frame of that window as the appearance condition, so
the adapter is pushed to learn how things move rather than what they look like.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.events import (
    EventHandler,
    Note,
    StageFinished,
    StageStarted,
    ignore_events,
)
from dreamvideo_cli.learn.common import (
    AdamWWithWarmup,
    Run,
    StopRequested,
    autocast,
    checkpoint_path,
    diffusion_loss,
    encode_latents,
    encode_text,
    frozen_dtype,
    generator_for,
    interrupted,
    make_noise_scheduler,
    maybe_save_checkpoint,
    pick_device,
    prepare_unet,
    quiet_libraries,
    report_progress,
    resumed_config,
    seed_everything,
    to_tensor_images,
    tokenize,
)
from dreamvideo_cli.learn.store import check_new_name, store_adapter
from dreamvideo_cli.speed import compiled_unet, gradient_checkpointing


@dataclass
class MotionConfig:
    """Defaults are the authors' (reference-implementation.md, "Hyper-parameters")."""

    backbone: str = "modelscope"
    backbone_path: str | None = None
    random_weights: bool = False
    phrase: str | None = None  # None: the motion's name with dashes as spaces
    steps: int = 1000
    frames: int = 32
    fps: int = 8
    batch_size: int = 1
    lr: float = 1e-5
    text_dropout: float = 0.5
    image_dropout: float = 0.1  # p_image_zero; the authors used 0 to 0.5
    appearance_strength: float = 1.0  # lambda
    warmup_steps: int = 10
    weight_decay: float = 0.0
    offset_noise: float = 0.1
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    compile: bool = False  # torch.compile the UNet (CUDA graphs on a GPU); same math
    save_every: int = 500
    log_every: int = 10
    seed: int | None = None
    device: str = "auto"
    description: str = ""


@dataclass
class _Clip:
    path: Path
    stride: int
    latents: torch.Tensor  # [N_source, 4, h, w], every source frame
    appearance: torch.Tensor  # [N_source, C'], CLIP embedding of every source frame
    caption_index: int


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
    if resume is not None:
        run, config, name, clips_dir = resumed_config(registry.home, resume, "motion", MotionConfig, config.device)
    check_new_name(registry, "motion", name)

    from dreamvideo_cli.plugins import get_backbone

    folder = Path(clips_dir)
    paths = media.list_clips(folder)
    infos = [media.probe_clip(p) for p in paths]
    captions = media.read_captions(folder, paths)
    phrase = config.phrase or name.replace("-", " ").replace("_", " ")
    backbone = get_backbone(config.backbone)(path=config.backbone_path, random_weights=config.random_weights)
    fmt = backbone.video_format
    fingerprint = backbone.fingerprint()  # fails now, before a run folder, if weights are missing
    for info in infos:
        if info.frames < config.frames * media.frame_stride(info.fps, config.fps):
            on_event(Note(f"{info.path.name} is shorter than {config.frames} frames at {config.fps} fps; it will loop", "warning"))

    if resume is None:
        config.seed = seed_everything(config.seed)
        run = Run.create(registry.home, "motion", name, config, folder)
    else:
        seed_everything(config.seed)
    on_event(Note(f"run {run.id} in {run.folder}"))

    device = pick_device(config.device)
    on_event(Note(f"loading backbone {fingerprint.describe()} on {device}"))
    parts = backbone.load(device, frozen_dtype(device))
    sites = backbone.adapter_sites(parts.unet)
    prepare_unet(parts)

    # --- frozen work, once: latents and CLIP embeddings of every source frame -------------
    caption_texts = sorted({captions.get(p) or phrase for p in paths})
    clips: list[_Clip] = []
    preview_frames: np.ndarray | None = None
    on_event(StageStarted("encoding", len(paths), "encoding clips once (VAE latents, CLIP embeddings)"))
    for i, (path, info) in enumerate(zip(paths, infos, strict=True)):
        frames = media.read_frames(path, None, fmt.height, fmt.width)  # uint8 [N, H, W, 3]
        pixels = to_tensor_images(list(frames), device)  # [N, 3, H, W]
        with torch.no_grad():
            appearance = torch.cat([parts.appearance_encoder(pixels[s : s + 32].to(parts.dtype)).float() for s in range(0, len(pixels), 32)])
        clips.append(
            _Clip(
                path=path,
                stride=media.frame_stride(info.fps, config.fps),
                latents=encode_latents(parts, pixels),
                appearance=appearance,
                caption_index=caption_texts.index(captions.get(path) or phrase),
            )
        )
        if preview_frames is None:
            stride = clips[-1].stride
            preview_frames = frames[::stride][: config.frames]
        del pixels, frames
        on_event(StageFinished("encoding") if i == len(paths) - 1 else Note(f"encoded {path.name}"))

    # Frozen text: every caption and the empty prompt (text dropout), encoded once.
    with torch.no_grad(), autocast(device):
        contexts = encode_text(parts, tokenize(parts, [*caption_texts, ""])).float()  # [K+1, T, D]
    empty_index = len(caption_texts)

    noise_scheduler = make_noise_scheduler(parts.schedule)
    gen = generator_for(device, config.seed or 0)
    rng = np.random.default_rng(config.seed)
    motion = AdapterSet("motion", sites, condition_dim=parts.appearance_dim).to(device)
    motion.set_strength(config.appearance_strength)
    motion.attach(parts.unet)
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
            idx = media.sample_frame_indices(len(clip.latents), config.frames, clip.stride, rng)
            x0.append(clip.latents[idx].permute(1, 0, 2, 3))  # [4, F, h, w]
            guide = clip.appearance[idx[int(rng.integers(len(idx)))]]  # a random frame of the window
            e.append(torch.zeros_like(guide) if rng.random() < config.image_dropout else guide)
            ctx.append(empty_index if rng.random() < config.text_dropout else clip.caption_index)
        return torch.stack(x0), torch.stack(e), contexts[torch.tensor(ctx, device=device)]

    stop = StopRequested()
    on_event(StageStarted("motion", config.steps, f"motion adapter ({motion.parameter_count():,} parameters)"))
    pending: list[torch.Tensor] = []
    unet = compiled_unet(parts.unet, config.compile, device)  # the same module, maybe compiled
    with stop.installed(), gradient_checkpointing(parts.unet, config.gradient_checkpointing):
        while step < config.steps:
            if stop:
                save_state(step)
                raise interrupted(run, "motion", step)
            x0, e, context = sample_batch()  # [B, 4, F, h, w], [B, C'], [B, T, D]
            motion.set_appearance(e)
            with autocast(device):
                loss = diffusion_loss(unet, x0, context.to(parts.dtype), noise_scheduler, gen, config.offset_noise)
            optimizer.step(loss)
            step += 1
            pending.append(loss.detach())
            report_progress(on_event, run, "motion", step, config.steps, pending, config.log_every, optimizer.lr)
            maybe_save_checkpoint(run, "motion", step, config.steps, config.save_every, motion, checkpoints, on_event)
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
