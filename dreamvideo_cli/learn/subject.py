"""Subject learning (paper Sec. 3.2): textual inversion, then the identity adapter.

Step 1 learns one new token embedding from the photos, trained as 1-frame videos.
Step 2 freezes that token and trains identity adapters beside every spatial
cross-attention. Temporal layers stay frozen and get no adapters here.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet, add_placeholder_token
from dreamvideo_cli.events import (
    EventHandler,
    Note,
    StageFinished,
    StageStarted,
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
    encode_text,
    quiet_libraries,
    to_tensor_images,
    tokenize,
)
from dreamvideo_cli.speed import compiled_unet, gradient_checkpointing

if TYPE_CHECKING:
    from dv_registry import Manifest, Registry


@dataclass
class SubjectConfig:
    """Defaults are the authors' (reference-implementation.md, "Hyper-parameters")."""

    backbone: str = "modelscope"
    backbone_path: str | None = None
    random_weights: bool = False
    init_word: str | None = None  # None: the subject's name
    masks: str | None = None
    embedding_steps: int = 3000
    adapter_steps: int = 1000
    batch_size: int = 4
    lr_embedding: float = 1e-4
    lr_adapter: float = 1e-5
    warmup_steps: int = 10
    weight_decay: float = 0.0
    offset_noise: float = 0.1
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    compile: bool = False  # torch.compile the denoiser (CUDA graphs on a GPU); same math
    adapter_width: int | None = None  # the identity adapter's bottleneck; None: the backbone's default
    preview_every: int = 0  # compose a preview every K steps of each stage (and at its end); 0: none
    preview_prompt: str | None = None  # None: the run's own caption, "a <token>"
    save_every: int = 500
    log_every: int = 10
    seed: int | None = None
    device: str = "auto"
    description: str = ""


def placeholder_token(name: str) -> str:
    return f"<{name}>"


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
    quiet_libraries()
    started = time.monotonic()
    resumed = None
    if resume is not None:
        resumed, config, name, photos_dir = resumed_config(
            registry.home, resume, "subject", SubjectConfig, config, on_event
        )
    check_new_name(registry, "subject", name)

    # --- data: validate everything before touching the model ---------------------------
    photos = media.load_photos(Path(photos_dir), on_warning=lambda m: on_event(Note(m, "warning")))
    paths = [p for p, _ in photos]
    masks = media.load_masks(Path(config.masks), paths) if config.masks else None
    backbone, fingerprint = open_backbone(config)
    fmt = backbone.video_format
    init_word = config.init_word or name.replace("-", " ").replace("_", " ")

    run = begin_run(registry.home, "subject", name, config, photos_dir, resumed, on_event)
    parts, sites = load_for_training(backbone, fingerprint, config.device, on_event)
    device = parts.device

    # --- frozen work, once: latents of every photo (a one-frame video each) and its mask ---
    crops = [np.asarray(media.resize_center_crop(img, fmt.height, fmt.width)) for _, img in photos]
    latents = parts.codec.encode_images(to_tensor_images(crops, device))  # [N, C, 1, h, w]
    mask_latents = None
    if masks is not None:
        m = np.stack([media.resize_center_crop_mask(mk, fmt.height, fmt.width) for mk in masks])
        m_t = torch.from_numpy(m.astype(np.float32)).unsqueeze(1).to(device)  # [N, 1, H, W]
        mask_latents = parts.codec.mask_latents(m_t, (latents.shape[-2], latents.shape[-1])).unsqueeze(
            2
        )  # [N, 1 or C, 1, h, w]
    n = latents.shape[0]

    token = placeholder_token(name)
    placeholder = add_placeholder_token(parts.tokenizer, parts.text_encoder, token, init_word)
    ids = tokenize(parts, [f"a {token}"])  # [1, T]
    gen = generator_for(device, config.seed or 0)
    design = backbone.adapter_design
    if config.adapter_width is not None:
        design = replace(design, identity_bottleneck=config.adapter_width)
    identity = AdapterSet.for_backbone("identity", sites, None, design).to(device)
    stop = StopRequested()

    # --- restore a saved run -------------------------------------------------------------
    stage, step = "embedding", 0
    state_tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, Any] = {}
    if resume is not None:
        state_tensors, state_meta = run.load_state()
        stage, step = state_meta["stage"], int(state_meta["step"])
        with torch.no_grad():
            placeholder.vectors.copy_(state_tensors["token.vectors"])
            identity.load_adapter_state_dict({k[8:]: v for k, v in state_tensors.items() if k.startswith("adapter.")})
        gen.set_state(state_tensors["rng.generator"].to(torch.uint8).cpu())
        run.truncate_losses(stage, step)
        on_event(Note(f"resuming {stage} at step {step}"))

    def save_state(stage: str, step: int, optimizer: AdamWWithWarmup) -> None:
        opt_tensors, opt_scalars = optimizer.state()
        tensors = {
            "token.vectors": placeholder.vectors.detach(),
            "rng.generator": gen.get_state(),
            **{f"adapter.{k}": v for k, v in identity.adapter_state_dict().items()},
            **opt_tensors,
        }
        run.save_state(tensors, {"stage": stage, "step": step, "optimizer": opt_scalars, "checkpoints": checkpoints})

    def sample_batch() -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(0, n, (config.batch_size,), generator=gen, device=device)
        return latents[idx], (mask_latents[idx] if mask_latents is not None else None)

    checkpoints: list[int] = list(state_meta.get("checkpoints", []))
    preview_prompt = (config.preview_prompt or "a {subject}").replace("{subject}", token)

    def preview(stage: str, step: int, total: int) -> None:
        if preview_due(config.preview_every, step, total):
            # Textual inversion needs the text encoder at its next step: keep it where it is.
            write_preview(
                parts,
                backbone,
                run,
                f"{stage}-step{step}",
                preview_prompt,
                fmt.frames,
                on_event,
                release_text=stage != "embedding",
            )

    model = compiled_unet(parts.denoiser, config.compile, device)  # the same module, maybe compiled
    with stop.installed(), gradient_checkpointing(parts.denoiser, config.gradient_checkpointing, parts.family):
        # --- step 1: textual inversion, only the new token's row learns ------------------
        if stage == "embedding":
            placeholder.vectors.requires_grad_(True)
            optimizer = AdamWWithWarmup(
                [placeholder.vectors], config.lr_embedding, config.weight_decay, config.warmup_steps
            )
            if step:
                optimizer.restore(state_tensors, state_meta["optimizer"], step)
            on_event(
                StageStarted("embedding", config.embedding_steps, f"textual inversion of {token} from {init_word!r}")
            )

            def embedding_loss() -> torch.Tensor:
                x0, mask = sample_batch()  # [B, C, 1, h, w]
                with autocast(device):
                    context = encode_text(parts, ids).expand(x0.shape[0], -1, -1)  # [B, T, D]
                    return diffusion_loss(parts, x0, context, gen, config.offset_noise, mask, model)

            step = run_stage(
                run=run, stage="embedding", step=step, total=config.embedding_steps, optimizer=optimizer,
                loss_fn=embedding_loss, stop=stop, save_state=lambda s: save_state("embedding", s, optimizer),
                on_event=on_event, log_every=config.log_every, after_step=lambda s: preview("embedding", s, config.embedding_steps),
            )  # fmt: skip
            on_event(StageFinished("embedding"))
            stage, step = "identity", 0
            save_state(
                "identity",
                0,
                AdamWWithWarmup(identity.parameters(), config.lr_adapter, config.weight_decay, config.warmup_steps),
            )

        # --- step 2: identity adapter with the token frozen ------------------------------
        placeholder.vectors.requires_grad_(False)
        identity.attach(parts.denoiser)
        with torch.no_grad(), autocast(device):
            context = encode_text(parts, ids).float()  # frozen now: computed once, [1, T, D]
        parts.text.release()
        optimizer = AdamWWithWarmup(identity.parameters(), config.lr_adapter, config.weight_decay, config.warmup_steps)
        if step:
            optimizer.restore(state_tensors, state_meta["optimizer"], step)
        on_event(
            StageStarted(
                "identity", config.adapter_steps, f"identity adapter ({identity.parameter_count():,} parameters)"
            )
        )

        def identity_loss() -> torch.Tensor:
            x0, mask = sample_batch()
            with autocast(device):
                return diffusion_loss(
                    parts,
                    x0,
                    context.expand(x0.shape[0], -1, -1).to(parts.dtype),
                    gen,
                    config.offset_noise,
                    mask,
                    model,
                )

        step = run_stage(
            run=run, stage="identity", step=step, total=config.adapter_steps, optimizer=optimizer,
            loss_fn=identity_loss, stop=stop, save_state=lambda s: save_state("identity", s, optimizer),
            on_event=on_event, log_every=config.log_every, checkpoints=checkpoints,
            save_every=config.save_every, adapters=identity, after_step=lambda s: preview("identity", s, config.adapter_steps),
        )  # fmt: skip
        on_event(StageFinished("identity"))
        save_state("done", step, optimizer)

    identity.detach()
    run.save_loss_plot()
    token_tensors = {"token": placeholder.vectors.detach().cpu()[placeholder.token_row]}
    return store_adapter(
        registry,
        kind="subject",
        name=name,
        backbone=backbone,
        adapters=identity,
        extra_tensors=token_tensors,
        checkpoints={f"step{s}": checkpoint_path(run, s) for s in checkpoints},
        fields={
            "token": token,
            "init_word": init_word,
            "training": {**asdict(config), "run": run.id, "photos": [p.name for p in paths]},
            "seed": config.seed,
            "dataset_digest": media.dataset_digest(paths),
            "duration_s": round(time.monotonic() - started, 2),
            "description": config.description,
        },
        reference_images=[(p, img) for p, img in photos],
        preview=media.contact_sheet(
            np.stack(crops), columns=min(len(crops), 5), max_frames=len(crops), label=f"{name}: {token} ({init_word})"
        ),
    )
