"""Motion learning (paper Sec. 3.3): the motion adapter, beside every temporal attention and
feed-forward, learns how the clips move, with the CLIP embedding of a random frame as
appearance guidance so that it need not learn what they look like (Eq. 4):

    L = E || eps - eps_theta(z_t, t, c, e) ||^2,  e = CLIP(a random frame of the window)

The data (clips encoded once, windows drawn per step) is learn/motion_data.py; the step loop,
checkpoints and `--resume` are the trainer's (learn/trainer.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.events import EventHandler, Note, ignore_events
from dreamvideo_cli.learn.motion_data import MotionClips
from dreamvideo_cli.learn.resume import resumed_config
from dreamvideo_cli.learn.trainer import Trainer, open_backbone
from dreamvideo_cli.learn_inputs import name_words
from dreamvideo_cli.registry_entries import check_new_name
from dreamvideo_cli.run_layout import Stage, check_step_counts
from dreamvideo_cli.runtime import autocast, quiet_libraries

if TYPE_CHECKING:
    from dv_registry import Manifest, Registry


@dataclass
class MotionConfig:
    """Defaults are the authors' (docs/method.md: "Motion learning", "Common to both")."""

    backbone: str = "modelscope"
    backbone_path: str | None = None
    random_weights: bool = False
    phrase: str | None = None  # None: the motion's name with dashes as spaces
    steps: int = 1000
    frames: int | None = None  # None: the backbone's (the paper's 32 at 8 fps; Wan: 33 at 16)
    fps: int | None = None
    batch_size: int = 1  # per process: the global batch is this times the number of processes
    lr: float = 1e-5
    text_dropout: float = 0.5
    image_dropout: float = 0.1  # p_image_zero; the authors used 0 to 0.5
    appearance_strength: float = 1.0  # lambda
    warmup_steps: int = 10
    weight_decay: float = 0.0
    offset_noise: float = 0.1
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    shard: bool = False  # FSDP2-shard the frozen denoiser over the launched processes
    fp8: bool = False  # scaled e4m3 storage of the frozen denoiser's linear weights (a measured error)
    blocks_to_swap: int = 0  # frozen weights of N blocks stream in from host memory (exact)
    offload_activations: bool = False  # tensors saved for backward wait in host memory (exact)
    compile: bool = False  # torch.compile the denoiser (CUDA graphs on a GPU); same math
    adapter_width: int | None = None  # the motion adapter's bottleneck; None: the backbone's default
    experts: str | None = None  # comma-separated expert names; None: the backbone's default for the kind
    preview_every: int = 0  # compose a preview every K steps (and at the end); 0: none
    preview_prompt: str | None = None  # None: the run's own caption (the motion phrase)
    save_every: int = 500
    log_every: int = 10
    seed: int | None = None
    device: str = "auto"
    description: str = ""


def learn_motion(
    clips_dir: str | Path,
    name: str,
    config: MotionConfig,
    *,
    registry: Registry,
    on_event: EventHandler = ignore_events,
    resume: str | None = None,
) -> Manifest:
    """Learn the motion `name` from the clips in `clips_dir`; returns the registry manifest."""
    check_step_counts(steps=config.steps, batch_size=config.batch_size, frames=config.frames, fps=config.fps)
    quiet_libraries()
    resumed = None
    if resume is not None:
        resumed, config, name, clips_dir = resumed_config(
            registry.home, resume, "motion", MotionConfig, config, on_event, name
        )
    check_new_name(registry, "motion", name)

    # Data: validate everything before touching the model.
    folder = Path(clips_dir)
    paths = media.list_clips(folder)
    infos = [media.probe_clip(p) for p in paths]
    captions = media.read_captions(folder, paths)
    phrase = config.phrase or name_words(name)
    backbone, fingerprint = open_backbone(config)
    config = replace(config, frames=config.frames or backbone.motion_frames, fps=config.fps or backbone.motion_fps)
    frames, fps = config.frames or 0, config.fps or 0
    backbone.check_frames(frames)
    for info in infos:
        if info.frames < frames * media.frame_stride(info.fps, fps):
            on_event(Note(f"{info.path.name} is shorter than {frames} frames at {fps} fps; it will loop", "warning"))

    trainer = Trainer.start(registry.home, "motion", name, config, folder, resumed, on_event, (backbone, fingerprint))
    parts = trainer.parts
    texts = [captions.get(p) or phrase for p in paths]
    data = MotionClips.encode(parts, backbone.video_format, infos, texts, frames, fps, on_event, backbone.name)
    design = backbone.adapter_design
    if config.adapter_width is not None:
        design = replace(design, motion_bottleneck=config.adapter_width)
    motion = AdapterSet.for_backbone("motion", trainer.sites, parts.appearance_dim, design).to(parts.device)
    motion.set_strength(config.appearance_strength)
    motion.attach(parts.denoiser)
    trainer.keep("adapter", motion)
    trainer.restore()
    with trainer.session():
        train_motion_adapter(trainer, motion, data, config, config.preview_prompt or phrase)
    motion.detach()
    return trainer.publish(
        registry,
        name,
        motion,
        inputs=paths,
        fields={"phrase": phrase, "training": {"clips": [p.name for p in paths], "captions": sorted(set(texts))}},
        reference_images=[(paths[0], Image.fromarray(data.preview[0]))],
        preview=media.contact_sheet(data.preview, columns=8, max_frames=16, label=f"{name}: {phrase}"),
    )


def train_motion_adapter(
    trainer: Trainer, motion: AdapterSet, data: MotionClips, config: MotionConfig, preview_prompt: str
) -> None:
    """Only the motion adapter learns; each step a batch of windows, each with a random frame's
    appearance embedding as its condition (dropped with p = image_dropout)."""
    parts = trainer.parts
    loss = motion_loss(trainer, motion, data, config)

    def preview(step: int) -> None:
        # Composed as `dv compose - MOTION` does: no subject, a zero appearance embedding.
        motion.set_appearance(torch.zeros(2, parts.appearance_dim, device=parts.device))
        trainer.write_preview(f"step{step}", preview_prompt, data.frames)

    trainer.train(
        Stage.MOTION, config.steps, list(motion.parameters()), config.lr, loss,
        describe=f"motion adapter ({motion.parameter_count():,} parameters)", checkpoint=motion, preview=preview,
    )  # fmt: skip


def motion_loss(
    trainer: Trainer, motion: AdapterSet, data: MotionClips, config: MotionConfig
) -> Callable[[], torch.Tensor]:
    """The motion adapter's loss on a batch of windows, each guided by one of its frames."""
    parts = trainer.parts

    def loss() -> torch.Tensor:
        size = trainer.global_batch(config.batch_size)
        batch = data.batch(size, trainer.streams.numpy, config.text_dropout, config.image_dropout, parts.device)
        motion.set_appearance(batch.appearance[trainer.rows(size)])  # this process's rows, [B / N, C']
        with autocast(parts.device):
            return trainer.diffusion_loss(batch.x0, batch.context.to(parts.dtype))

    return loss
