"""Subject learning (paper Sec. 3.2), in two steps over the photos, each a 1-frame video:

1. textual inversion (Eq. 2): one new token's embedding learns the subject, initialised from
   a word; the rest of the model is frozen;
2. the identity adapter (Eq. 3), beside every spatial cross-attention, learns the details the
   token misses, with the token frozen. Temporal layers stay frozen and get no adapters.

Both minimise the backbone's diffusion loss, optionally masked to the subject. The step loop,
checkpoints and `--resume` are the trainer's (learn/trainer.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet, PlaceholderEmbedding, add_placeholder_token
from dreamvideo_cli.backbone import Components, VideoFormat
from dreamvideo_cli.events import EventHandler, Note, ignore_events
from dreamvideo_cli.learn.resume import resumed_config
from dreamvideo_cli.learn.trainer import Trainer
from dreamvideo_cli.learn_inputs import name_words
from dreamvideo_cli.memory.placement import use
from dreamvideo_cli.registry_entries import check_new_name
from dreamvideo_cli.run_layout import Stage, check_step_counts, check_subject_steps
from dreamvideo_cli.runtime import autocast, encode_text, quiet_libraries, to_tensor_images, tokenize
from dreamvideo_cli.text import Tokens

if TYPE_CHECKING:
    from dv_registry import Manifest, Registry


@dataclass
class SubjectConfig:
    """Defaults are the authors' (docs/method.md: "Subject learning", "Common to both")."""

    backbone: str = "modelscope"
    backbone_path: str | None = None
    random_weights: bool = False
    init_word: str | None = None  # None: the subject's name
    masks: str | None = None
    embedding_steps: int = 3000
    adapter_steps: int = 1000
    batch_size: int = 4  # per process: the global batch is this times the number of processes
    lr_embedding: float = 1e-4
    lr_adapter: float = 1e-5
    warmup_steps: int = 10
    weight_decay: float = 0.0
    offset_noise: float = 0.1
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    shard: bool = False  # FSDP2-shard the frozen denoiser over the launched processes
    fp8: bool = False  # scaled e4m3 storage of the frozen denoiser's linear weights (a measured error)
    blocks_to_swap: int = 0  # frozen weights of N blocks stream in from host memory (exact)
    offload_activations: bool = False  # tensors saved for backward wait in host memory (exact)
    compile: bool = False  # torch.compile the denoiser (CUDA graphs on a GPU); same math
    adapter_width: int | None = None  # the identity adapter's bottleneck; None: the backbone's default
    experts: str | None = None  # comma-separated expert names; None: the backbone's default for the kind
    preview_every: int = 0  # compose a preview every K steps of each stage (and at its end); 0: none
    preview_prompt: str | None = None  # None: the run's own caption, "a <token>"
    save_every: int = 500
    log_every: int = 10
    seed: int | None = None
    device: str = "auto"
    description: str = ""


def placeholder_token(name: str) -> str:
    return f"<{name}>"


@dataclass
class SubjectPhotos:
    """The photos as the model sees them, encoded once: latents [N, C, 1, h, w] and, with masks,
    their latent loss weights [N, 1 or C, 1, h, w]; a batch draws photos with replacement."""

    crops: np.ndarray  # uint8 [N, H, W, 3], centre crops at the backbone's size
    latents: torch.Tensor
    masks: torch.Tensor | None

    @classmethod
    def encode(
        cls, parts: Components, fmt: VideoFormat, photos: list[Image.Image], masks: list[np.ndarray] | None
    ) -> SubjectPhotos:
        crops = np.stack([np.asarray(media.resize_center_crop(img, fmt.height, fmt.width)) for img in photos])
        use(parts, "codec")
        latents = parts.codec.encode_images(to_tensor_images(crops, parts.device))  # [N, C, 1, h, w]
        mask_latents = None
        if masks is not None:
            m = np.stack([media.resize_center_crop_mask(mk, fmt.height, fmt.width) for mk in masks])
            m_t = torch.from_numpy(m.astype(np.float32)).unsqueeze(1).to(parts.device)  # [N, 1, H, W]
            mask_latents = parts.codec.mask_latents(m_t, (latents.shape[-2], latents.shape[-1])).unsqueeze(
                2
            )  # [N, 1|C, 1, h, w]
        use(parts)  # every part back to the host until training places the denoiser
        return cls(crops, latents, mask_latents)

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(0, len(self.latents), (size,), generator=generator, device=self.latents.device)
        return self.latents[idx], (self.masks[idx] if self.masks is not None else None)


def learn_subject(
    photos_dir: str | Path,
    name: str,
    config: SubjectConfig,
    *,
    registry: Registry,
    on_event: EventHandler = ignore_events,
    resume: str | None = None,
) -> Manifest:
    """Learn `name` from the photos in `photos_dir`; returns the stored registry manifest."""
    check_subject_steps(config.embedding_steps, config.adapter_steps)
    check_step_counts(batch_size=config.batch_size)
    quiet_libraries()
    resumed, config = None, replace(config)  # the run records its seed in its own copy
    if resume is not None:
        resumed, config, name, photos_dir = resumed_config(
            registry.home, resume, "subject", SubjectConfig, config, on_event, name
        )
    check_new_name(registry, "subject", name)

    # Data: validate everything before touching the model.
    photos = media.load_photos(Path(photos_dir), on_warning=lambda m: on_event(Note(m, "warning")))
    paths = [p for p, _ in photos]
    masks = media.load_masks(Path(config.masks), paths) if config.masks else None
    init_word = config.init_word or name_words(name)

    trainer = Trainer.start(registry.home, "subject", name, config, photos_dir, resumed, on_event)
    parts = trainer.parts
    data = SubjectPhotos.encode(parts, trainer.backbone.video_format, [img for _, img in photos], masks)
    token = placeholder_token(name)
    placeholder = add_placeholder_token(parts.tokenizer, parts.text_encoder, token, init_word)
    ids = tokenize(parts, [f"a {token}"])  # [1, T]
    design = trainer.backbone.adapter_design
    if config.adapter_width is not None:
        design = replace(design, identity_bottleneck=config.adapter_width)
    identity = AdapterSet.for_backbone("identity", trainer.sites, None, design).to(parts.device)
    trainer.keep("token.vectors", placeholder.vectors)
    trainer.keep("adapter", identity)
    trainer.restore()
    preview_prompt = (config.preview_prompt or "a {subject}").replace("{subject}", token)
    with trainer.session():
        if not trainer.passed(Stage.EMBEDDING):
            textual_inversion(trainer, placeholder, ids, data, config, preview_prompt, f"{token} from {init_word!r}")
        train_identity_adapter(trainer, identity, placeholder, ids, data, config, preview_prompt)
    identity.detach()
    return trainer.publish(
        registry,
        name,
        identity,
        inputs=paths,
        fields={"token": token, "init_word": init_word, "training": {"photos": [p.name for p in paths]}},
        extra_tensors={"token": placeholder.vectors.detach().cpu()[placeholder.token_row]},
        reference_images=[(p, img) for p, img in photos],
        preview=media.contact_sheet(
            data.crops,
            columns=min(len(data.crops), 5),
            max_frames=len(data.crops),
            label=f"{name}: {token} ({init_word})",
        ),
    )


def textual_inversion(
    trainer: Trainer,
    placeholder: PlaceholderEmbedding,
    ids: Tokens,
    data: SubjectPhotos,
    config: SubjectConfig,
    preview_prompt: str,
    what: str,
) -> None:
    """Step 1: only the new token's embedding row learns; the text encoder runs every step."""
    parts = trainer.parts
    parts.text.to_device()  # the row it learns lives in the encoder: on the GPU before its optimizer is made
    placeholder.vectors.requires_grad_(True)

    def loss() -> torch.Tensor:
        x0, mask = data.batch(trainer.global_batch(config.batch_size), trainer.streams.torch)  # [B, C, 1, h, w]
        with autocast(parts.device):
            context = encode_text(parts, ids).expand(x0.shape[0], -1, -1)  # [B, T, D]
            return trainer.diffusion_loss(x0, context, mask)

    def preview(step: int) -> None:
        # Textual inversion needs the text encoder at its next step: keep it where it is.
        trainer.write_preview(
            f"embedding-step{step}", preview_prompt, trainer.backbone.video_format.frames, release_text=False
        )

    trainer.train(
        Stage.EMBEDDING, config.embedding_steps, [placeholder.vectors], config.lr_embedding, loss,
        describe=f"textual inversion of {what}", preview=preview,
    )  # fmt: skip


def train_identity_adapter(
    trainer: Trainer,
    identity: AdapterSet,
    placeholder: PlaceholderEmbedding,
    ids: Tokens,
    data: SubjectPhotos,
    config: SubjectConfig,
    preview_prompt: str,
) -> None:
    """Step 2: the token is frozen, so its text embedding is computed once; only the identity
    adapter learns."""
    parts = trainer.parts
    placeholder.vectors.requires_grad_(False)
    identity.attach(parts.denoiser)
    with torch.no_grad(), autocast(parts.device):
        context = encode_text(parts, ids).float()  # [1, T, D]
    parts.text.release()

    def preview(step: int) -> None:
        trainer.write_preview(f"identity-step{step}", preview_prompt, trainer.backbone.video_format.frames)

    loss = identity_loss(trainer, data, context, config.batch_size)
    trainer.train(
        Stage.IDENTITY, config.adapter_steps, list(identity.parameters()), config.lr_adapter, loss,
        describe=f"identity adapter ({identity.parameter_count():,} parameters)", checkpoint=identity, preview=preview,
    )  # fmt: skip


def identity_loss(
    trainer: Trainer, data: SubjectPhotos, context: torch.Tensor, batch_size: int
) -> Callable[[], torch.Tensor]:
    """The identity adapter's loss on a batch of photos with the frozen caption `context` [1, T, D]."""
    parts = trainer.parts

    def loss() -> torch.Tensor:
        x0, mask = data.batch(trainer.global_batch(batch_size), trainer.streams.torch)  # [B, C, 1, h, w]
        with autocast(parts.device):
            return trainer.diffusion_loss(x0, context.expand(x0.shape[0], -1, -1).to(parts.dtype), mask)

    return loss
