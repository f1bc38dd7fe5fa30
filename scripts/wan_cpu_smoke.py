"""Full-size Wan 2.1 1.3B transformer and VAE with random weights on the CPU (no download):
DreamVideo's adapters attach (zero = bit-identical), one adapter training step runs, the VAE
round-trips. `uv run python scripts/wan_cpu_smoke.py` (about 1 min, 7.5 GiB; the 5.7B text
encoder is left out: a random 4096-wide context stands in for it)."""

from __future__ import annotations

import json
import resource
import time
from typing import Any

import torch
from diffusers import AutoencoderKLWan

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import Components
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.objectives import FlowMatchObjective
from dv_wan import configs
from dv_wan.backbones import WanBackbone
from dv_wan.family import WAN, WanVideoCodec


def main() -> dict[str, Any]:
    torch.manual_seed(0)
    out: dict[str, Any] = {}
    started = time.time()
    backbone = WanBackbone(random_weights=True)
    denoiser = backbone.build_denoiser("cpu").requires_grad_(False).eval()
    out["build_transformer_s"] = round(time.time() - started, 1)
    out["transformer_parameters"] = sum(p.numel() for p in denoiser.parameters())
    codec = WanVideoCodec(AutoencoderKLWan(**configs.VAE_CONFIG).requires_grad_(False).eval())
    started = time.time()
    latents = codec.encode_video(torch.rand(5, 3, 64, 64))  # [16, 2, 8, 8]
    out["decoded_shape"] = list(codec.decode_video(latents).shape)
    out["vae_5x64x64_encode_decode_s"] = round(time.time() - started, 1)
    parts = Components(
        denoiser=denoiser, family=WAN, objective=FlowMatchObjective(3.0), codec=codec, text=None,  # type: ignore[arg-type]
        appearance_encoder=torch.nn.Identity(), appearance_dim=1024, device=torch.device("cpu"), dtype=torch.float32,
    )  # fmt: skip
    x0, context, timestep = latents.unsqueeze(0), torch.randn(1, 64, 4096), torch.tensor([700.0])
    with torch.no_grad():
        started = time.time()
        before = parts.denoise(x0, timestep, context)
        out["forward_s"] = round(time.time() - started, 2)
    sites = backbone.adapter_sites(denoiser)
    identity = AdapterSet.for_backbone("identity", sites, None, backbone.adapter_design).attach(denoiser)
    motion = AdapterSet.for_backbone("motion", sites, 1024, backbone.adapter_design).attach(denoiser)
    motion.set_appearance(torch.randn(1, 1024))
    out["identity_parameters"], out["motion_parameters"] = identity.parameter_count(), motion.parameter_count()
    with torch.no_grad():
        out["zero_adapters_bit_identical"] = bool(torch.equal(before, parts.denoise(x0, timestep, context)))
    optimizer = torch.optim.AdamW([*identity.parameters(), *motion.parameters()], lr=1e-4)
    started = time.time()
    loss = diffusion_loss(parts, x0, context, torch.Generator().manual_seed(0), 0.1)
    loss.backward()
    optimizer.step()
    out["train_step_s"], out["loss"] = round(time.time() - started, 1), round(loss.item(), 4)
    with torch.no_grad():
        out["adapters_change_output_after_a_step"] = not torch.equal(before, parts.denoise(x0, timestep, context))
    motion.detach()
    identity.detach()
    with torch.no_grad():
        out["detached_bit_identical"] = bool(torch.equal(before, parts.denoise(x0, timestep, context)))
    out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
