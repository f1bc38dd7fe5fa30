"""Reference check for the UNet3D family: with no adapters (or adapters at zero), dv's
sampling on the tiny backbone equals diffusers' own TextToVideoSDPipeline (ModelScopeT2V's
pipeline) on the same weights, prompt, initial noise and DDIM scheduler. The DDPM loss
equals its definition. (The same checks for Wan are in plugins/dv-wan/tests.)"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.runtime import encode_text, tokenize
from dreamvideo_cli.samplers import DDIM, UNIPC
from dreamvideo_cli.sampling import initial_noise, sample_latents
from dreamvideo_cli.testing import TinyBackbone

PROMPT = "a dog walking on the beach"


def _pipeline_latents(parts: Any, scheduler: Any, latents: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:
    from diffusers import TextToVideoSDPipeline

    pipe = TextToVideoSDPipeline(
        vae=parts.codec.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.denoiser,
        scheduler=scheduler,
    )
    with torch.no_grad():
        out = pipe(
            prompt=PROMPT,
            negative_prompt="",
            num_frames=8,
            height=32,
            width=32,
            num_inference_steps=steps,
            guidance_scale=guidance,
            latents=latents.clone(),
            output_type="latent",
        ).frames
    return out if isinstance(out, torch.Tensor) else torch.as_tensor(out)


@pytest.mark.parametrize(("sampler", "zero_adapters"), [(DDIM, False), (DDIM, True), (UNIPC, False)])
def test_sampling_equals_text_to_video_sd_pipeline(sampler: Any, zero_adapters: bool) -> None:
    backbone = TinyBackbone()
    parts = backbone.load("cpu")
    latents = initial_noise(parts, 8, 32, 32, seed=5)  # [1, 4, 8, 4, 4]
    attached = []
    if zero_adapters:
        sites = backbone.adapter_sites(parts.denoiser)
        attached = [
            AdapterSet("identity", sites).attach(parts.denoiser),
            AdapterSet("motion", sites, parts.appearance_dim).attach(parts.denoiser),
        ]
        attached[1].set_appearance(torch.randn(2, parts.appearance_dim))
    with torch.no_grad():
        context = encode_text(parts, tokenize(parts, [PROMPT, ""]))
    ours = sample_latents(parts, context, latents, 4, 9.0, sampler)
    for adapters in attached:
        adapters.detach()
    theirs = _pipeline_latents(parts, sampler.make_scheduler(parts.objective), latents, 4, 9.0)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_ddpm_loss_is_the_definition() -> None:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) e, target e, t ~ U{0..999}: diffusers' text-to-image
    training scripts' loss, with the authors' offset noise."""
    parts = TinyBackbone().load("cpu")
    x0 = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    context = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        loss = diffusion_loss(parts, x0, context, torch.Generator().manual_seed(3), offset_noise=0.1)
        g = torch.Generator().manual_seed(3)
        noise = torch.randn(x0.shape, generator=g) + 0.1 * torch.randn((2, 4, 1, 1, 1), generator=g)
        t = torch.randint(0, 1000, (2,), generator=g)
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
        a = torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = parts.denoiser(xt, t, encoder_hidden_states=context).sample
        want = ((pred - noise) ** 2).mean()
    torch.testing.assert_close(loss, want)
