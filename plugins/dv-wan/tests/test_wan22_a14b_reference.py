"""Wan 2.2 T2V-A14B on the tiny model of its classes: dv's sampling equals diffusers'
WanPipeline(transformer, transformer_2, boundary_ratio) with guidance_scale_2, with no
adapters and with adapters at zero, switching experts at the same step; a training batch of
mixed timesteps goes row by row to each row's expert."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import Components
from dreamvideo_cli.runtime import encode_text, tokenize
from dreamvideo_cli.samplers import UNIPC
from dreamvideo_cli.sampling import initial_noise, sample_latents
from dv_wan import configs
from dv_wan.backbones import TinyWan22A14BBackbone, Wan22A14BBackbone
from dv_wan.family import WAN22_A14B, WanExperts

PROMPT = "a dog walking on the beach"
NEGATIVE = "a blue square"
# 4 UniPC steps at shift 3.0 have timesteps 999, 900, 750, 500: two on each side of 875.
STEPS = 4
SWITCH = 2  # the first step of the low-noise expert
GUIDANCE, GUIDANCE_2 = 4.0, 3.0  # wan2.2-a14b's defaults (guidance_scale, guidance_scale_2)
FRAMES, HEIGHT, WIDTH = 9, 32, 32


@pytest.fixture(scope="module")
def parts() -> Components:
    return TinyWan22A14BBackbone().load("cpu")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class _Calls:
    """Which expert each call of the denoiser's experts went to, with its timestep."""

    def __init__(self, experts: WanExperts) -> None:
        self.seen: list[tuple[str, torch.Tensor]] = []
        self.handles = [
            module.register_forward_pre_hook(self._recorder(name), with_kwargs=True)
            for name, module in (("high", experts.high), ("low", experts.low))
        ]

    def _recorder(self, name: str) -> Any:
        def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            self.seen.append((name, kwargs["timestep"].detach().clone()))

        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _pipeline_latents(parts: Components, latents: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    from diffusers import UniPCMultistepScheduler, WanPipeline

    experts: Any = parts.denoiser
    pipe: Any = WanPipeline(
        tokenizer=parts.tokenizer,
        text_encoder=parts.text_encoder,
        vae=parts.codec.vae,  # type: ignore[attr-defined]
        scheduler=UniPCMultistepScheduler.from_config(configs.SCHEDULER_CONFIGS["A14B"]),
        transformer=experts.high,
        transformer_2=experts.low,
        boundary_ratio=configs.A14B_BOUNDARY_RATIO,
    )
    calls = _Calls(experts)
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
                guidance_scale_2=GUIDANCE_2,
                latents=latents.clone(),
                max_sequence_length=parts.text.max_length,
                output_type="latent",
            ).frames
    finally:
        calls.remove()
    return out, calls.seen


def _dv_latents(parts: Components, latents: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    calls = _Calls(parts.denoiser)  # type: ignore[arg-type]
    try:
        with torch.no_grad():
            context = encode_text(parts, tokenize(parts, [PROMPT, NEGATIVE]))
        guidance = TinyWan22A14BBackbone.sampling
        assert (guidance.guidance, dict(guidance.expert_guidance)) == (GUIDANCE, {"low": GUIDANCE_2})
        out = sample_latents(
            parts, context, latents, STEPS, guidance.guidance, UNIPC, expert_guidance=guidance.expert_guidance
        )
    finally:
        calls.remove()
    return out, calls.seen


@pytest.mark.parametrize("zero_adapters", [False, True])
def test_sampling_equals_wan_pipeline_with_two_experts(parts: Components, zero_adapters: bool) -> None:
    backbone = TinyWan22A14BBackbone()
    latents = initial_noise(parts, FRAMES, HEIGHT, WIDTH, seed=7)
    assert latents.shape == (1, 16, 3, 4, 4)
    attached = []
    if zero_adapters:  # both kinds on both experts
        sites = backbone.adapter_sites(parts.denoiser)
        design = backbone.adapter_design
        attached = [
            AdapterSet.for_backbone("identity", sites, None, design).attach(parts.denoiser),
            AdapterSet.for_backbone("motion", sites, parts.appearance_dim, design).attach(parts.denoiser),
        ]
        attached[1].set_appearance(torch.randn(2, parts.appearance_dim))
    try:
        ours, our_calls = _dv_latents(parts, latents)
    finally:
        for adapters in attached:
            adapters.detach()
    theirs, their_calls = _pipeline_latents(parts, latents)
    assert _relative(ours, theirs) < 1e-4
    # The same expert at every step, switching at the same step: dv calls once per step with
    # both guidance branches, the pipeline twice with one each.
    ours_experts = [name for name, _ in our_calls]
    theirs_experts = [name for name, _ in their_calls[::2]]
    assert ours_experts == theirs_experts == ["high"] * SWITCH + ["low"] * (STEPS - SWITCH)
    assert [name for name, _ in their_calls[1::2]] == theirs_experts
    for (_, ours_t), (_, theirs_t) in zip(our_calls, their_calls[::2], strict=True):
        assert torch.equal(ours_t[:1], theirs_t)


def test_a_batch_of_mixed_timesteps_goes_to_each_rows_expert(parts: Components) -> None:
    experts: Any = parts.denoiser
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(3, 16, 3, 4, 4, generator=g), torch.randn(3, 32, 32, generator=g)
    t = torch.tensor([990.0, 875.0, 874.9])  # 875 itself is the high-noise expert's, as in WanPipeline
    with torch.no_grad():
        together = parts.denoise(x, t, context)
        for row, expert in enumerate((experts.high, experts.high, experts.low)):
            alone = expert(
                hidden_states=x[row : row + 1],
                timestep=t[row : row + 1],
                encoder_hidden_states=context[row : row + 1],
                return_dict=False,
            )[0]
            torch.testing.assert_close(together[row : row + 1], alone, rtol=1e-5, atol=1e-6)


def test_the_experts_in_the_contract() -> None:
    high, low = WAN22_A14B.experts()
    assert (high.name, high.path, high.start, high.end) == ("high", "high", 875.0, None)
    assert (low.name, low.path, low.start, low.end) == ("low", "low", None, 875.0)
    assert high.holds(875.0) and not low.holds(875.0) and low.holds(874.99)
    assert TinyWan22A14BBackbone.family() is Wan22A14BBackbone.family() is WAN22_A14B
    model: Any = TinyWan22A14BBackbone().build_denoiser("meta")
    sites = WAN22_A14B.adapter_sites(model)
    assert [s.path for s in sites if s.kind == "identity"] == [
        "high.blocks.0", "high.blocks.1", "low.blocks.0", "low.blocks.1",
    ]  # fmt: skip
    targets = WAN22_A14B.checkpoint_targets(model)
    assert [(parent, index) for parent, index in targets] == [
        (model.high.blocks, 0), (model.high.blocks, 1), (model.low.blocks, 0), (model.low.blocks, 1),
    ]  # fmt: skip
