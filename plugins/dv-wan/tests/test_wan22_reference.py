"""Wan 2.2 TI2V-5B on the tiny model of its classes: dv's sampling equals diffusers'
WanPipeline(expand_timesteps=True) with no adapters and with adapters at zero; the per-token
timesteps are the pipeline's and reach the transformer in training too; the 48-channel codec
and the 32-pixel size rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from dreamvideo_cli.adapters import AdapterSet, ParallelAdapter
from dreamvideo_cli.backbone import Components
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.objectives import FlowMatchObjective
from dreamvideo_cli.runtime import encode_text, tokenize
from dreamvideo_cli.samplers import UNIPC
from dreamvideo_cli.sampling import initial_noise, sample_latents
from dv_wan import configs
from dv_wan.backbones import TinyWan22Backbone, TinyWanBackbone, Wan22TI2V5BBackbone
from dv_wan.family import WAN22_TI2V, token_timesteps

PROMPT = "a dog walking on the beach"
NEGATIVE = "a blue square"
STEPS = 4
GUIDANCE = 5.0
FRAMES, HEIGHT, WIDTH = 9, 32, 64  # tiny-wan2.2-5b's format: latents [48, 3, 2, 4], 6 tokens


@pytest.fixture(scope="module")
def parts() -> Components:
    return TinyWan22Backbone().load("cpu")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class _Recorder:
    """The `timestep` of every call of the transformer."""

    def __init__(self, model: Any) -> None:
        self.seen: list[torch.Tensor] = []
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.seen.append(kwargs["timestep"].detach().clone())

    def remove(self) -> None:
        self.handle.remove()


def _pipeline_latents(parts: Components, latents: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    from diffusers import UniPCMultistepScheduler, WanPipeline

    # TI2V-5B's scheduler as diffusers converts it (UniPC over flow sigmas, shift 5.0).
    scheduler = UniPCMultistepScheduler.from_config(configs.SCHEDULER_CONFIG_22)
    pipe: Any = WanPipeline(
        tokenizer=parts.tokenizer,
        text_encoder=parts.text_encoder,
        vae=parts.codec.vae,  # type: ignore[attr-defined]
        scheduler=scheduler,
        transformer=parts.denoiser,
        expand_timesteps=True,
    )
    recorder = _Recorder(parts.denoiser)
    try:
        with torch.no_grad():
            out = pipe(
                prompt=PROMPT,
                negative_prompt=NEGATIVE,
                height=HEIGHT,
                width=WIDTH,
                num_frames=FRAMES,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE,
                latents=latents.clone(),
                max_sequence_length=parts.text.max_length,
                output_type="latent",
            ).frames
    finally:
        recorder.remove()
    return out, recorder.seen


def _dv_latents(parts: Components, latents: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    recorder = _Recorder(parts.denoiser)
    try:
        with torch.no_grad():
            context = encode_text(parts, tokenize(parts, [PROMPT, NEGATIVE]))
        out = sample_latents(parts, context, latents, STEPS, GUIDANCE, UNIPC)
    finally:
        recorder.remove()
    return out, recorder.seen


@pytest.mark.parametrize("zero_adapters", [False, True])
def test_sampling_equals_wan_pipeline_with_expand_timesteps(parts: Components, zero_adapters: bool) -> None:
    backbone = TinyWan22Backbone()
    latents = initial_noise(parts, FRAMES, HEIGHT, WIDTH, seed=7)
    assert latents.shape == (1, 48, 3, 2, 4)
    attached = []
    if zero_adapters:
        sites = backbone.adapter_sites(parts.denoiser)
        design = backbone.adapter_design
        attached = [
            AdapterSet.for_backbone("identity", sites, None, design).attach(parts.denoiser),
            AdapterSet.for_backbone("motion", sites, parts.appearance_dim, design).attach(parts.denoiser),
        ]
        attached[1].set_appearance(torch.randn(2, parts.appearance_dim))
    try:
        ours, our_timesteps = _dv_latents(parts, latents)
    finally:
        for adapters in attached:
            adapters.detach()
    theirs, their_timesteps = _pipeline_latents(parts, latents)
    assert _relative(ours, theirs) < 1e-4
    # The same per-token timesteps at every step: dv calls the transformer once per step with
    # both guidance branches, the pipeline twice with one each.
    assert len(our_timesteps) == STEPS and len(their_timesteps) == 2 * STEPS
    for step, ours_t in enumerate(our_timesteps):
        assert ours_t.shape == (2, 6) and ours_t.dtype == torch.float32
        for branch in range(2):
            assert torch.equal(ours_t[branch : branch + 1], their_timesteps[2 * step + branch])


def test_decoding_equals_wan_pipeline(parts: Components) -> None:
    """The 48-channel per-channel statistics and the 2x2 unpatchify, as the pipeline decodes."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    latents = initial_noise(parts, FRAMES, HEIGHT, WIDTH, seed=11)
    ours = parts.codec.decode_video(latents[0])  # uint8 [9, 32, 64, 3]
    pipe: Any = WanPipeline(
        tokenizer=parts.tokenizer,
        text_encoder=parts.text_encoder,
        vae=parts.codec.vae,  # type: ignore[attr-defined]
        scheduler=UniPCMultistepScheduler.from_config(configs.SCHEDULER_CONFIG_22),
        transformer=parts.denoiser,
        expand_timesteps=True,
    )
    with torch.no_grad():
        theirs = pipe(
            prompt=PROMPT,
            height=HEIGHT,
            width=WIDTH,
            num_frames=FRAMES,
            num_inference_steps=1,
            guidance_scale=1.0,
            latents=latents.clone(),
            max_sequence_length=parts.text.max_length,
            output_type="np",
            callback_on_step_end=lambda pipe, i, t, kw: {"latents": latents.clone()},  # decode our noise as is
        ).frames[0]
    assert ours.shape == theirs.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours.astype(np.float64) - theirs * 255).max() <= 1.0


def test_token_timesteps_are_the_pipelines() -> None:
    """WanPipeline: `mask[0][0][:, ::2, ::2] * t` flattened, expanded over the batch."""
    model: Any = TinyWan22Backbone().build_denoiser("cpu")
    latents = torch.zeros(3, 48, 5, 6, 8)
    t = torch.tensor([999.0, 500.5, 1.0])
    got = token_timesteps(model, latents, t)
    mask = torch.ones(latents.shape, dtype=torch.float32)
    for i in range(3):
        want = (mask[0][0][:, ::2, ::2] * t[i]).flatten()
        assert torch.equal(got[i], want)
    assert got.shape == (3, 5 * 3 * 4)
    # An integer scheduler timestep becomes float32, as the float mask makes it in the pipeline.
    assert token_timesteps(model, latents[:1], torch.tensor([801])).dtype == torch.float32


def test_training_calls_the_transformer_with_per_token_timesteps(parts: Components) -> None:
    objective = parts.objective
    assert isinstance(objective, FlowMatchObjective) and objective.shift == 5.0
    assert parts.family is WAN22_TI2V and TinyWanBackbone.family() is not WAN22_TI2V
    sites = TinyWan22Backbone().adapter_sites(parts.denoiser)
    motion = AdapterSet.for_backbone("motion", sites, parts.appearance_dim, TinyWan22Backbone.adapter_design)
    motion.attach(parts.denoiser)
    recorder = _Recorder(parts.denoiser)
    try:
        motion.set_appearance(torch.randn(2, parts.appearance_dim))
        x0 = torch.randn(2, 48, 3, 2, 4)
        g = torch.Generator().manual_seed(0)
        loss = diffusion_loss(parts, x0, torch.randn(2, 32, 32), g, offset_noise=0.1)
        loss.backward()
    finally:
        recorder.remove()
        motion.detach()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in motion.parameters())
    (seen,) = recorder.seen
    assert seen.shape == (2, 6)  # one timestep per token: 3 latent frames x 1 x 2
    assert all(torch.unique(row).numel() == 1 for row in seen)  # text-to-video: all tokens alike


def test_zero_adapters_are_bit_identical_with_per_token_timesteps(parts: Components) -> None:
    model: Any = parts.denoiser
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 48, 3, 2, 4, generator=g), torch.randn(2, 32, 32, generator=g)
    t = torch.tensor([700.0, 30.0])
    with torch.no_grad():
        before = parts.denoise(x, t, context)
    sites = TinyWan22Backbone().adapter_sites(model)
    design = TinyWan22Backbone.adapter_design
    identity = AdapterSet.for_backbone("identity", sites, None, design).attach(model)
    motion = AdapterSet.for_backbone("motion", sites, parts.appearance_dim, design).attach(model)
    try:
        motion.set_appearance(torch.randn(2, parts.appearance_dim))
        assert isinstance(model.blocks[0].attn1, ParallelAdapter) and isinstance(model.blocks[0].attn2, ParallelAdapter)
        with torch.no_grad():
            at_zero = parts.denoise(x, t, context)
    finally:
        motion.detach()
        identity.detach()
    assert torch.equal(before, at_zero)


def test_the_codec_is_wan_22s(parts: Components) -> None:
    codec: Any = parts.codec
    assert (codec.channels, codec.spatial_factor, codec.temporal_factor) == (48, 16, 4)
    assert codec.latent_frames(121) == 31 and codec.latent_size(704, 1280) == (44, 80)
    video = torch.rand(FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(2))
    z = codec.encode_video(video)
    assert z.shape == (48, 3, 2, 4)
    raw = codec.vae.encode(video.permute(1, 0, 2, 3).unsqueeze(0) * 2 - 1).latent_dist.mean[0]
    mean = torch.tensor(configs.LATENTS_MEAN_22).view(-1, 1, 1, 1)
    std = torch.tensor(configs.LATENTS_STD_22).view(-1, 1, 1, 1)
    torch.testing.assert_close(z, (raw - mean) / std)
    # A photo is a one-frame video: the first latent frame of a clip that starts with it.
    photo = codec.encode_images(video[:1])
    assert photo.shape == (1, 48, 1, 2, 4)
    torch.testing.assert_close(photo[0, :, 0], z[:, 0], atol=1e-5, rtol=1e-5)
    assert codec.decode_video(z).shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_sizes_must_be_multiples_of_32(parts: Components) -> None:
    codec: Any = parts.codec
    with pytest.raises(DVError) as info:
        codec.latent_size(720, 1280)
    message = str(info.value)
    assert "\n" not in message
    assert "height 720, width 1280 does not fit tiny-wan2.2-5b: its sizes are multiples of 32" in message
    assert info.value.hint == "use height 704 or 736"
    with pytest.raises(DVError) as info:
        codec.encode_images(torch.rand(1, 3, 48, 40))
    assert info.value.hint == "use height 32 or 64, width 32 or 64"
    with pytest.raises(DVError) as info:
        initial_noise(parts, FRAMES, 16, 64, seed=0)
    assert info.value.hint == "use height 32"
    # The formats the backbones state are valid ones.
    for backbone in (Wan22TI2V5BBackbone, TinyWan22Backbone):
        fmt = backbone.video_format
        assert fmt.height % 32 == 0 and fmt.width % 32 == 0 and (fmt.frames - 1) % 4 == 0
        assert (backbone.motion_frames - 1) % 4 == 0 and backbone.motion_fps == fmt.fps == 24
