"""Reference check: with no adapters (or adapters at zero), dv's sampling on tiny-wan equals
diffusers' own WanPipeline on the same weights, prompt, initial noise and scheduler."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.runtime import encode_text, tokenize
from dreamvideo_cli.samplers import EULER, UNIPC
from dreamvideo_cli.sampling import initial_noise, sample_latents
from dv_wan import configs
from dv_wan.backbones import TinyWanBackbone

PROMPT = "a dog walking on the beach"
STEPS = 4
GUIDANCE = 5.0


def _pipeline(parts: Any, scheduler: Any) -> Any:
    from diffusers import WanPipeline

    return WanPipeline(
        tokenizer=parts.tokenizer,
        text_encoder=parts.text_encoder,
        vae=parts.codec.vae,
        scheduler=scheduler,
        transformer=parts.denoiser,
    )


def _dv_latents(parts: Any, sampler: Any, latents: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        context = encode_text(parts, tokenize(parts, [PROMPT, ""]))
    return sample_latents(parts, context, latents, STEPS, GUIDANCE, sampler)


@pytest.mark.parametrize("zero_adapters", [False, True])
def test_unipc_sampling_equals_wan_pipeline(zero_adapters: bool) -> None:
    from diffusers import UniPCMultistepScheduler

    backbone = TinyWanBackbone()
    parts = backbone.load("cpu")
    latents = initial_noise(parts, 9, 32, 32, seed=7)  # [1, 16, 3, 4, 4]
    attached = []
    if zero_adapters:
        sites = backbone.adapter_sites(parts.denoiser)
        attached = [
            AdapterSet.for_backbone("identity", sites, None, backbone.adapter_design).attach(parts.denoiser),
            AdapterSet.for_backbone("motion", sites, parts.appearance_dim, backbone.adapter_design).attach(
                parts.denoiser
            ),
        ]
        attached[1].set_appearance(torch.randn(2, parts.appearance_dim))
    ours = _dv_latents(parts, UNIPC, latents)
    for adapters in attached:
        adapters.detach()
    # The hub's own scheduler config (scheduler/scheduler_config.json of Wan2.1-T2V-1.3B-Diffusers).
    scheduler = UniPCMultistepScheduler.from_config(configs.SCHEDULER_CONFIG)
    pipe = _pipeline(parts, scheduler)
    with torch.no_grad():
        theirs = pipe(
            prompt=PROMPT,
            negative_prompt="",
            height=32,
            width=32,
            num_frames=9,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            latents=latents.clone(),
            max_sequence_length=parts.text.max_length,
            output_type="latent",
        ).frames
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_euler_sampling_equals_wan_pipeline_with_flow_match_euler() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    parts = TinyWanBackbone().load("cpu")
    latents = initial_noise(parts, 9, 32, 32, seed=3)
    ours = _dv_latents(parts, EULER, latents)
    pipe = _pipeline(parts, FlowMatchEulerDiscreteScheduler(shift=3.0))
    with torch.no_grad():
        theirs = pipe(
            prompt=PROMPT,
            negative_prompt="",
            height=32,
            width=32,
            num_frames=9,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            latents=latents.clone(),
            max_sequence_length=parts.text.max_length,
            output_type="latent",
        ).frames
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_decoding_equals_wan_pipeline() -> None:
    """The codec's decode (un-normalise per channel, VAE in fp32) is the pipeline's."""
    from diffusers import UniPCMultistepScheduler

    parts = TinyWanBackbone().load("cpu")
    latents = initial_noise(parts, 9, 32, 32, seed=11)
    ours = _dv_latents(parts, UNIPC, latents)
    video = parts.codec.decode_video(ours[0])  # uint8 [9, 32, 32, 3]
    pipe = _pipeline(parts, UniPCMultistepScheduler.from_config(configs.SCHEDULER_CONFIG))
    with torch.no_grad():
        theirs = pipe(
            prompt=PROMPT,
            negative_prompt="",
            height=32,
            width=32,
            num_frames=9,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            latents=latents.clone(),
            max_sequence_length=parts.text.max_length,
            output_type="np",
        ).frames[0]  # float [9, 32, 32, 3] in [0, 1]
    assert video.shape == theirs.shape
    assert np.abs(video.astype(np.float64) - theirs * 255).max() <= 1.0
