"""Composition (paper Sec. 3.4): sample a video with a subject's and a motion's adapters.

Classifier-free guidance runs the conditional and unconditional branches as one batch:
eps = eps_u + g * (eps_c - eps_u). The unconditional branch gets the empty prompt and a
zero appearance embedding, as in the authors' code.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dreamvideo_cli import __version__, media
from dreamvideo_cli.adapter_refs import check_counts, check_output, resolve_pair
from dreamvideo_cli.adapters import AdapterSet, add_placeholder_token, remove_placeholder_tokens
from dreamvideo_cli.backbone import Backbone, Components, Fingerprint
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.events import (
    EventHandler,
    Note,
    StageFinished,
    StageStarted,
    StepDone,
    ignore_events,
)
from dreamvideo_cli.learn.common import prepare_denoiser
from dreamvideo_cli.learn.store import load_adapter_tensors, reference_images
from dreamvideo_cli.runtime import (
    autocast,
    encode_appearance,
    encode_text,
    frozen_dtype,
    pick_device,
    quiet_libraries,
    to_tensor_images,
    tokenize,
)

if TYPE_CHECKING:
    from dv_registry import Manifest, Registry


@dataclass
class ComposeConfig:
    steps: int | None = None  # None: the backbone's default for its own sampler, else the sampler's
    guidance: float | None = None  # None: the backbone's (ModelScope: 9, Wan: 5)
    frames: int | None = None  # None: the backbone's (ModelScope: 32)
    fps: int | None = None
    seed: int | None = None
    subject_scale: float = 1.0
    motion_scale: float = 1.0
    appearance_strength: float = 1.0  # lambda
    appearance_image: str | None = None
    sampler: str | None = None  # None: the backbone's (ModelScope: ddim, Wan: unipc)
    eta: float = 0.0
    negative_prompt: str = ""
    gif: bool = False
    device: str = "auto"
    backbone_path: str | None = None


@dataclass
class ComposeResult:
    video: Path
    contact_sheet: Path
    prompt: str
    seed: int
    metadata: dict[str, Any] = field(default_factory=dict)
    gif: Path | None = None
    frames: Any = None  # the video as uint8 [F, H, W, 3], before encoding (sweeps score these)


# Words that start a scene ("on snow", "in the park"): a motion-only prompt's motion phrase
# goes before the first of them, after the user's own subject ("a bear walking in the snow").
SCENE_WORDS = frozenset(
    [
        "on",
        "in",
        "at",
        "under",
        "over",
        "through",
        "across",
        "along",
        "by",
        "near",
        "with",
        "into",
        "onto",
        "inside",
        "around",
        "beside",
        "behind",
        "above",
        "below",
    ]
)


def build_prompt(user_prompt: str, token: str | None, phrase: str | None) -> str:
    """DESIGN.md: `{subject}` (and `{motion}`) in the prompt are substituted; otherwise
    the prompt becomes `a {subject} {motion phrase} {prompt}`. Without a subject, the
    motion phrase goes after the prompt's own subject, before its scene: `a big pink star`
    + `circles quickly` + `on snow`, not `circles quickly a big pink star on snow`."""
    subject = token or ""
    if "{subject}" in user_prompt or "{motion}" in user_prompt:
        text = user_prompt.replace("{subject}", subject).replace("{motion}", phrase or "")
    elif token:
        text = " ".join(w for w in ("a", token, phrase or "", user_prompt) if w)
    else:
        words = user_prompt.split()
        cut = next((i for i, word in enumerate(words) if word.lower() in SCENE_WORDS), len(words))
        text = " ".join([*words[:cut], phrase or "", *words[cut:]])
    return " ".join(text.split())


class LoadedBackbone:
    """Keeps the last backbone `compose` loaded, so a sequence of composes (an evaluation
    grid) loads the weights once. compose leaves the parts as it found them."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._parts: Components | None = None

    def get(self, backbone: Backbone, device: torch.device) -> Components:
        key = (type(backbone), backbone.path, backbone.random_weights, str(device))
        if self._parts is None or key != self._key:
            self._parts = None  # free the old weights before loading new ones
            self._parts = backbone.load(device, frozen_dtype(device))
            self._key = key
        return self._parts


def backbone_for(manifests: list[Any], backbone_path: str | None) -> tuple[Backbone, Fingerprint]:
    """The backbone every adapter was trained on; refuse adapters from different ones."""
    from dreamvideo_cli.plugins import get_backbone

    prints = [(m, Fingerprint.from_dict(m.backbone)) for m in manifests]
    first_manifest, first = prints[0]
    same = get_backbone(first.backbone).same_weights if first.backbone == prints[-1][1].backbone else None
    for manifest, fp in prints[1:]:
        if same is None or not same(fp, first):
            raise DVError(
                f"{first_manifest.ref} was trained on {first.describe()} but {manifest.ref} on {fp.describe()}",
                "learn both on the same backbone",
            )
    backbone = get_backbone(first.backbone)(path=backbone_path, random_weights=first.random_weights)
    return backbone, first


def check_backbone(backbone: Backbone, expected: Fingerprint, ref: str) -> None:
    """After loading (a download may have just resolved the revision), refuse a backbone
    other than the one the adapters were trained on."""
    loaded = backbone.fingerprint()
    if not backbone.same_weights(loaded, expected):
        raise DVError(
            f"{ref} was trained on {expected.describe()}, but the backbone here is {loaded.describe()}",
            "compose with the backbone the adapters were trained on",
        )


def compose(
    subject_ref: str,
    motion_ref: str,
    prompt: str,
    output: str | Path,
    config: ComposeConfig,
    *,
    registry: Registry,
    on_event: EventHandler = ignore_events,
    loaded: LoadedBackbone | None = None,
) -> ComposeResult:
    """Generate a video of the subject doing the motion; writes the video, a contact
    sheet PNG beside it, and the settings as metadata."""
    quiet_libraries()
    started = time.monotonic()
    subject, motion = resolve_pair(registry, subject_ref, motion_ref)
    output = check_output(output)
    check_counts(config.steps, config.frames)
    appearance_path = Path(config.appearance_image) if config.appearance_image else None
    appearance_photo = media.load_photo(appearance_path) if appearance_path else None

    from dreamvideo_cli.plugins import get_sampler

    backbone, fingerprint = backbone_for([m for m in (subject, motion) if m is not None], config.backbone_path)
    defaults = backbone.sampling
    sampler = get_sampler(config.sampler or defaults.sampler)
    steps = config.steps or (defaults.steps if sampler.name == defaults.sampler else sampler.default_steps)
    trained_levels = backbone.training_objective().num_train_timesteps
    if steps > trained_levels:
        raise DVError(
            f"--steps {steps} is more than the {trained_levels} noise levels {backbone.name} was trained with",
            f"use at most --steps {trained_levels}",
        )
    guidance = defaults.guidance if config.guidance is None else config.guidance
    fmt = backbone.video_format
    frames, fps = config.frames or fmt.frames, config.fps or fmt.fps
    backbone.check_frames(frames)
    seed = config.seed if config.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())

    device = pick_device(config.device)
    on_event(Note(f"loading backbone {fingerprint.describe()} on {device}"))
    parts = loaded.get(backbone, device) if loaded is not None else backbone.load(device, frozen_dtype(device))
    check_backbone(backbone, fingerprint, next(m.ref for m in (subject, motion) if m is not None))
    sites = backbone.adapter_sites(parts.denoiser)
    prepare_denoiser(parts)

    # Loaded parts may be reused by the next compose (a grid): undo every change to them.
    with contextlib.ExitStack() as undo:
        token = phrase = None
        if subject is not None:
            token = subject.token
            if token is None:
                raise DVError(
                    f"{subject.ref} records no token", f"learn it again, or remove it with `dv rm {subject.ref}`"
                )
            placeholder = add_placeholder_token(
                parts.tokenizer, parts.text_encoder, token, subject.init_word or "object"
            )
            undo.callback(remove_placeholder_tokens, parts.tokenizer, parts.text_encoder)
            with torch.no_grad():
                vector = load_adapter_tensors(registry, subject, "token_embedding")["token"]
                placeholder.vectors[placeholder.token_row].copy_(vector)
            identity = AdapterSet.for_state("identity", sites, None, load_adapter_tensors(registry, subject)).to(device)
            identity.set_scale(config.subject_scale)
            identity.attach(parts.denoiser)
            undo.callback(identity.detach)
        motion_set = None
        if motion is not None:
            phrase = motion.phrase
            motion_set = AdapterSet.for_state(
                "motion", sites, parts.appearance_dim, load_adapter_tensors(registry, motion)
            ).to(device)
            motion_set.set_scale(config.motion_scale)
            motion_set.set_strength(config.appearance_strength)
            motion_set.attach(parts.denoiser)
            undo.callback(motion_set.detach)

        final_prompt = build_prompt(prompt, token, phrase)
        on_event(Note(f"prompt: {final_prompt}"))
        check_prompt_length(parts, final_prompt, token, backbone.name, on_event)
        check_prompt_length(parts, config.negative_prompt, None, backbone.name, on_event, "negative prompt")

        # The appearance guide: a user image, else one of the subject's photos (chosen by the
        # seed, as the paper picks one at random), else nothing (a zero embedding).
        guide_source = None
        guide = torch.zeros(1, parts.appearance_dim, device=device)
        if motion_set is not None:
            if appearance_photo is not None:
                guide_image, guide_source = appearance_photo, str(appearance_path)
            elif subject is not None:
                refs = reference_images(registry, subject)
                pick = int(np.random.default_rng(seed).integers(len(refs)))
                guide_image, guide_source = refs[pick], f"{subject.ref} reference image {pick}"
            else:
                guide_image = None
            if guide_image is not None:
                guide = encode_appearance(parts, to_tensor_images([np.asarray(guide_image)], device))
            motion_set.set_appearance(torch.cat([guide, torch.zeros_like(guide)]))

        video = sample_video(
            parts,
            final_prompt,
            config.negative_prompt,
            frames,
            fmt.height,
            fmt.width,
            steps,
            guidance,
            sampler,
            seed,
            config.eta,
            on_event,
        )

    metadata = {
        "dv_version": __version__,
        "prompt": final_prompt,
        "user_prompt": prompt,
        "negative_prompt": config.negative_prompt,
        "subject": _describe(subject),
        "motion": _describe(motion),
        "seed": seed,
        "steps": steps,
        "sampler": sampler.name,
        "guidance": guidance,
        "frames": frames,
        "fps": fps,
        "height": fmt.height,
        "width": fmt.width,
        "subject_scale": config.subject_scale,
        "motion_scale": config.motion_scale,
        "appearance_strength": config.appearance_strength,
        "appearance_image": guide_source,
        "backbone": fingerprint.as_dict(),
        "seconds": round(time.monotonic() - started, 2),
    }
    video_path = media.write_video(output, video, fps, metadata)
    sheet_path = media.save_png(
        media.contact_sheet(video, columns=8, max_frames=16, label=final_prompt),
        output.with_suffix(".png"),
    )
    gif_path = None
    if config.gif and output.suffix.lower() != ".gif":
        gif_path = media.write_video(output.with_suffix(".gif"), video, fps, metadata)
    return ComposeResult(video_path, sheet_path, final_prompt, seed, metadata, gif_path, video)


def _describe(manifest: Manifest | None) -> dict[str, Any] | None:
    if manifest is None:
        return None
    return {
        "ref": manifest.ref,
        "digest": manifest.digest,
        "token": manifest.token,
        "init_word": manifest.init_word,
        "phrase": manifest.phrase,
    }


def check_prompt_length(
    parts: Components, prompt: str, token: str | None, backbone: str, on_event: EventHandler, what: str = "prompt"
) -> None:
    """A prompt longer than the text encoder reads is cut: warn with the words lost, and
    refuse when the cut would drop the subject's token (the subject would vanish)."""
    dropped = parts.text.overflow(prompt)
    if not dropped:
        return
    words = parts.tokenizer.decode(dropped).strip()
    limit = parts.text.max_length
    if token is not None and parts.tokenizer.convert_tokens_to_ids(token) in dropped:
        raise DVError(
            f"the {what} is longer than {backbone}'s text encoder reads ({limit} tokens), and the cut drops the subject's token {token}",
            "shorten it, or put {subject} earlier in it",
        )
    on_event(
        Note(
            f"the {what} is longer than {backbone}'s text encoder reads ({limit} tokens); it is cut before: {words!r}",
            "warning",
        )
    )


def initial_noise(parts: Components, frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """The starting latents [1, C, F', h, w], drawn on the CPU so a seed gives the same video
    on any device."""
    h, w = parts.codec.latent_size(height, width)
    cpu = torch.Generator("cpu").manual_seed(seed)
    shape = (1, parts.codec.channels, parts.codec.latent_frames(frames), h, w)
    return torch.randn(shape, generator=cpu).to(parts.device)


@torch.no_grad()
def sample_latents(
    parts: Components,
    context: torch.Tensor,
    latents: torch.Tensor,
    steps: int,
    guidance: float,
    sampler: Any,
    eta: float = 0.0,
    on_event: EventHandler = ignore_events,
) -> torch.Tensor:
    """Classifier-free guidance with both branches as one batch, from `latents` [1, C, F', h, w]
    (unit noise) with `context` [2, T, D] (the prompt, then the negative prompt):
    pred = pred_u + g * (pred_c - pred_u). Returns the final latents."""
    device = parts.device
    scheduler = sampler.make_scheduler(parts.objective)
    scheduler.set_timesteps(steps, device=device)
    # Flow-matching schedulers start from unit noise and scale no inputs.
    latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)
    scale_input = getattr(scheduler, "scale_model_input", lambda x, t: x)
    step_kwargs = {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}
    on_event(StageStarted("sampling", len(scheduler.timesteps), f"{sampler.name}, {steps} steps, guidance {guidance}"))
    for i, t in enumerate(scheduler.timesteps):
        x = scale_input(torch.cat([latents, latents]), t)  # [2, C, F', h, w]
        with autocast(device):
            pred = parts.denoise(x.to(parts.dtype), t.expand(2), context).float()
        pred_c, pred_u = pred.chunk(2)
        pred = pred_u + guidance * (pred_c - pred_u)
        latents = scheduler.step(pred, t, latents, **step_kwargs).prev_sample
        on_event(StepDone("sampling", i + 1, len(scheduler.timesteps)))
    on_event(StageFinished("sampling"))
    return latents


@torch.no_grad()
def sample_video(
    parts: Components,
    prompt: str,
    negative_prompt: str,
    frames: int,
    height: int,
    width: int,
    steps: int,
    guidance: float,
    sampler: Any,
    seed: int,
    eta: float = 0.0,
    on_event: EventHandler = ignore_events,
    release_text: bool = True,
) -> np.ndarray:
    """Sample and decode one video; returns uint8 [F, H, W, 3]. `release_text=False` keeps
    an offloadable text encoder where it is (a preview in the middle of textual inversion,
    which needs it again at the next step)."""
    with autocast(parts.device):
        context = encode_text(parts, tokenize(parts, [prompt, negative_prompt])).to(parts.dtype)  # [2, T, D]
    if release_text:
        parts.text.release()
    latents = initial_noise(parts, frames, height, width, seed)
    latents = sample_latents(parts, context, latents, steps, guidance, sampler, eta, on_event)
    on_event(StageStarted("decoding", 1, "VAE decode"))
    video = parts.codec.decode_video(latents[0])
    on_event(StageFinished("decoding"))
    return video


def settings_dict(config: ComposeConfig) -> dict[str, Any]:
    return asdict(config)
