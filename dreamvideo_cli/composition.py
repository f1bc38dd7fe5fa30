"""Composition (paper Sec. 3.4): a video of a subject doing a motion, from their adapters in
the registry: resolve both, check they were learnt on the backbone here, attach them at
their scales, build the prompt, pick the appearance guide, sample, write the video.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet, add_placeholder_token, remove_placeholder_tokens
from dreamvideo_cli.backbone import AdapterSite, Backbone, Components, Fingerprint
from dreamvideo_cli.compose_inputs import check_counts, check_output, resolve_pair
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.events import EventHandler, Note, ignore_events
from dreamvideo_cli.experts import sites_in_state
from dreamvideo_cli.memory.levers import MemoryLevers, levers_applied, store_fp8
from dreamvideo_cli.memory.placement import check_backbone_path, load_frozen_parts, use
from dreamvideo_cli.objectives import DDPMObjective
from dreamvideo_cli.plugins import get_backbone, get_sampler
from dreamvideo_cli.registry_entries import load_adapter_tensors, reference_images
from dreamvideo_cli.runtime import (
    encode_appearance,
    overflow_warning,
    pick_device,
    quiet_libraries,
    to_tensor_images,
)
from dreamvideo_cli.samplers import Sampler
from dreamvideo_cli.sampling import VideoRequest, sample_video

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
    fp8: bool = False  # scaled e4m3 storage of the frozen denoiser's linear weights (a measured error)
    blocks_to_swap: int = 0  # frozen weights of N blocks stream in from host memory (exact)
    # (expert, scale): guidance on that expert's steps (Wan 2.2 A14B: `high`, `low`), over `guidance`.
    expert_guidance: tuple[tuple[str, float], ...] = ()


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
    """`{subject}` (and `{motion}`) in the prompt are substituted; otherwise
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


class BackboneCache:
    """Keeps the last backbone `compose` loaded, so a sequence of composes (an evaluation
    grid, a sweep) loads the weights once. compose leaves the parts as it found them."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._parts: Components | None = None

    @staticmethod
    def _key_of(backbone: Backbone, device: torch.device, fp8: bool) -> tuple[Any, ...]:
        return (type(backbone), backbone.path, backbone.random_weights, str(device), fp8)

    def holds(self, backbone: Backbone, device: torch.device, fp8: bool = False) -> bool:
        """Whether `get` returns what it has without loading."""
        return self._parts is not None and self._key == self._key_of(backbone, device, fp8)

    def get(self, backbone: Backbone, device: torch.device, fp8: bool = False) -> Components:
        key = self._key_of(backbone, device, fp8)
        if self._parts is None or key != self._key:
            self._parts = None  # free the old weights before loading new ones
            self._parts = load_parts(backbone, device, fp8)
            self._key = key
        return self._parts


def load_parts(backbone: Backbone, device: torch.device, fp8: bool) -> Components:
    """The frozen parts for `device` (staged on a GPU: `memory.placement`), prepared, the
    denoiser's linear weights in fp8 if asked."""
    parts = load_frozen_parts(backbone, device)
    if fp8:
        store_fp8(parts)
    return parts


def backbone_for(manifests: list[Manifest], backbone_path: str | None) -> tuple[Backbone, Fingerprint]:
    """The backbone every adapter was trained on; refuse adapters from different ones."""
    prints = [(m, Fingerprint.from_dict(m.backbone)) for m in manifests]
    first_manifest, first = prints[0]
    same = get_backbone(first.backbone).same_weights if first.backbone == prints[-1][1].backbone else None
    for manifest, fp in prints[1:]:
        if same is None or not same(fp, first):
            raise DVError(
                f"{first_manifest.ref} was trained on {first.describe()} but {manifest.ref} on {fp.describe()}",
                "learn both on the same backbone",
            )
    check_backbone_path(backbone_path)
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
    cache: BackboneCache | None = None,
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
    backbone, fingerprint = backbone_for([m for m in (subject, motion) if m is not None], config.backbone_path)
    request = _video_request(backbone, config, prompt)

    device = pick_device(config.device)
    check_request_fits(backbone, request, config, device)
    if cache is None or not cache.holds(backbone, device, config.fp8):  # a sweep loads once, and says so once
        from dreamvideo_cli.plan.limits import host_memory_warning

        warning = host_memory_warning(backbone, device)
        if warning is not None:
            on_event(Note(warning, "warning"))
        on_event(Note(f"loading backbone {fingerprint.describe()} on {device}"))
    parts = cache.get(backbone, device, config.fp8) if cache is not None else load_parts(backbone, device, config.fp8)
    check_backbone(backbone, fingerprint, next(m.ref for m in (subject, motion) if m is not None))
    sites = backbone.adapter_sites(parts.denoiser)

    # Loaded parts may be reused by the next compose (a grid): undo every change to them.
    with contextlib.ExitStack() as undo:
        token = _attach_subject(parts, sites, subject, config, registry, undo) if subject is not None else None
        motion_set = _attach_motion(parts, sites, motion, config, registry, undo) if motion is not None else None
        final_prompt = build_prompt(prompt, token, motion.phrase if motion is not None else None)
        on_event(Note(f"prompt: {final_prompt}"))
        check_prompt_length(parts, final_prompt, token, backbone.name, on_event)
        check_prompt_length(parts, config.negative_prompt, None, backbone.name, on_event, "negative prompt")
        guide_source = None
        if motion_set is not None:
            guide_image, guide_source = _appearance_guide(registry, subject, appearance_photo, appearance_path, request)
            guide = torch.zeros(1, parts.appearance_dim, device=device)
            if guide_image is not None:
                use(parts, "appearance")
                guide = encode_appearance(parts, to_tensor_images([np.asarray(guide_image)], device))
            motion_set.set_appearance(torch.cat([guide, torch.zeros_like(guide)]))  # [2, C']: cond, uncond
        request = replace(request, prompt=final_prompt)
        with levers_applied(parts, MemoryLevers(blocks_to_swap=config.blocks_to_swap)):
            video = sample_video(parts, request, on_event=on_event)

    fps = config.fps or backbone.video_format.fps
    metadata = {
        "dv_version": importlib.metadata.version("dreamvideo"),
        "prompt": final_prompt,
        "user_prompt": prompt,
        "negative_prompt": config.negative_prompt,
        "subject": _describe(subject),
        "motion": _describe(motion),
        "seed": request.seed,
        "steps": request.steps,
        "sampler": request.sampler.name,
        "guidance": request.guidance,
        **({"expert_guidance": dict(request.expert_guidance)} if request.expert_guidance else {}),
        "frames": request.frames,
        "fps": fps,
        "height": request.height,
        "width": request.width,
        "subject_scale": config.subject_scale,
        "motion_scale": config.motion_scale,
        "appearance_strength": config.appearance_strength,
        "appearance_image": guide_source,
        "fp8": config.fp8,
        "backbone": fingerprint.as_dict(),
        "seconds": round(time.monotonic() - started, 2),
    }
    return _write_outputs(output, video, fps, metadata, config.gif, final_prompt)


def _video_request(backbone: Backbone, config: ComposeConfig, prompt: str) -> VideoRequest:
    """The sampler, steps, guidance, size and seed: the user's, else the backbone's."""
    defaults = backbone.sampling
    sampler = get_sampler(config.sampler or defaults.sampler)
    steps = config.steps or (defaults.steps if sampler.name == defaults.sampler else sampler.default_steps)
    limit = _most_steps(backbone, sampler)
    if steps > limit:
        raise DVError(
            f"--sample-steps {steps} is more than {sampler.name} can take on the "
            f"{backbone.training_objective().num_train_timesteps} noise levels {backbone.name} was trained with",
            f"use at most --sample-steps {limit}",
        )
    fmt = backbone.video_format
    frames = config.frames or fmt.frames
    backbone.check_frames(frames)
    seed = config.seed if config.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
    guidance = defaults.guidance if config.guidance is None else config.guidance
    # A user's --guidance holds on every step, as WanPipeline's guidance_scale does without
    # guidance_scale_2, except on the experts that --expert-guidance names.
    expert_guidance = _expert_guidance(backbone, config)
    return VideoRequest(
        prompt, frames, fmt.height, fmt.width, steps, guidance, sampler, seed, config.negative_prompt, config.eta,
        expert_guidance,
    )  # fmt: skip


def _expert_guidance(backbone: Backbone, config: ComposeConfig) -> tuple[tuple[str, float], ...]:
    """Each expert's guidance where it differs from the steps' `guidance`: the user's
    --expert-guidance over the backbone's defaults (the defaults only when --guidance is not given)."""
    names = [expert.name for expert in backbone.family().experts()]
    unknown = [name for name, _ in config.expert_guidance if name not in names]
    if unknown:
        has = f"the experts {', '.join(names)}" if names else "one denoiser, no experts"
        raise DVError(
            f"--expert-guidance names {', '.join(unknown)}, but {backbone.name} has {has}",
            f"e.g. --expert-guidance {names[-1]}=3" if names else "set the guidance of every step with --guidance",
        )
    chosen = dict(backbone.sampling.expert_guidance if config.guidance is None else ())
    chosen.update(config.expert_guidance)
    return tuple(chosen.items())


def check_request_fits(backbone: Backbone, request: VideoRequest, config: ComposeConfig, device: torch.device) -> None:
    """A video longer than the backbone makes by default is planned before anything loads and
    refused in one line when it needs more memory than the device has (`plan.limits`)."""
    from dreamvideo_cli.plan import Settings
    from dreamvideo_cli.plan.limits import check_device_memory

    settings = Settings(fp8=config.fp8, blocks_to_swap=config.blocks_to_swap)
    check_device_memory("compose", backbone, request.frames, settings, device)


def _most_steps(backbone: Backbone, sampler: Sampler) -> int:
    """The most sampling steps `sampler` can take on the backbone's trained noise levels: all of
    them, less those a DDPM sampler's offset pushes past the last (DDIM at 1000 of 1000)."""
    objective = backbone.training_objective()
    limit = objective.num_train_timesteps
    if isinstance(objective, DDPMObjective):
        scheduler = sampler.make_scheduler(objective)
        while limit > 1:
            scheduler.set_timesteps(limit)
            if int(scheduler.timesteps.max()) < objective.num_train_timesteps:
                break
            limit -= 1
    return limit


def _attach_subject(
    parts: Components,
    sites: list[AdapterSite],
    subject: Manifest,
    config: ComposeConfig,
    registry: Registry,
    undo: contextlib.ExitStack,
) -> str:
    """The subject's token (with its learnt embedding) and identity adapter, at its scale;
    returns the token."""
    token = subject.token
    if token is None:
        raise DVError(f"{subject.ref} records no token", f"learn it again, or remove it with `dv rm {subject.ref}`")
    placeholder = add_placeholder_token(parts.tokenizer, parts.text_encoder, token, subject.init_word or "object")
    undo.callback(remove_placeholder_tokens, parts.tokenizer, parts.text_encoder)
    with torch.no_grad():
        vector = load_adapter_tensors(registry, subject, "token_embedding")["token"]
        placeholder.vectors[placeholder.token_row].copy_(vector)
    state = load_adapter_tensors(registry, subject)
    sites = sites_in_state(sites, parts.family.experts(), state)  # each expert's tensors on that expert
    identity = AdapterSet.for_state("identity", sites, None, state)
    identity.to(parts.device).set_scale(config.subject_scale)
    identity.attach(parts.denoiser)
    undo.callback(identity.detach)
    return token


def _attach_motion(
    parts: Components,
    sites: list[AdapterSite],
    motion: Manifest,
    config: ComposeConfig,
    registry: Registry,
    undo: contextlib.ExitStack,
) -> AdapterSet:
    """The motion adapter at its scale and appearance strength (lambda)."""
    state = load_adapter_tensors(registry, motion)
    sites = sites_in_state(sites, parts.family.experts(), state)
    motion_set = AdapterSet.for_state("motion", sites, parts.appearance_dim, state)
    motion_set.to(parts.device)
    motion_set.set_scale(config.motion_scale)
    motion_set.set_strength(config.appearance_strength)
    motion_set.attach(parts.denoiser)
    undo.callback(motion_set.detach)
    return motion_set


def _appearance_guide(
    registry: Registry,
    subject: Manifest | None,
    photo: Any,
    photo_path: Path | None,
    request: VideoRequest,
) -> tuple[Any, str | None]:
    """The appearance guide and where it came from: a user image, else one of the subject's
    photos (chosen by the seed, as the paper picks one at random), else nothing (the motion
    adapter then gets a zero embedding)."""
    if photo is not None:
        return photo, str(photo_path)
    if subject is None:
        return None, None
    refs = reference_images(registry, subject)
    pick = int(np.random.default_rng(request.seed).integers(len(refs)))
    return refs[pick], f"{subject.ref} reference image {pick}"


def _write_outputs(
    output: Path, video: np.ndarray, fps: int, metadata: dict[str, Any], gif: bool, prompt: str
) -> ComposeResult:
    """The video, its contact sheet beside it, and the GIF when asked for."""
    video_path = media.write_video(output, video, fps, metadata)
    sheet_path = media.save_png(
        media.contact_sheet(video, columns=8, max_frames=16, label=prompt), output.with_suffix(".png")
    )
    gif_path = None
    if gif and output.suffix.lower() != ".gif":
        gif_path = media.write_video(output.with_suffix(".gif"), video, fps, metadata)
    return ComposeResult(video_path, sheet_path, prompt, int(metadata["seed"]), metadata, gif_path, video)


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
    if token is not None and parts.tokenizer.convert_tokens_to_ids(token) in dropped:
        raise DVError(
            f"the {what} is longer than {backbone}'s text encoder reads ({parts.text.max_length} tokens), and the cut drops the subject's token {token}",
            "shorten it, or put {subject} earlier in it",
        )
    on_event(Note(overflow_warning(parts, backbone, f"the {what}", parts.tokenizer.decode(dropped).strip()), "warning"))
