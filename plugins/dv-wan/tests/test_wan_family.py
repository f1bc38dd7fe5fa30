"""DreamVideo's adapters on Wan's transformer blocks, the flow-matching loss, the video
codec, and textual inversion on a T5 vocabulary, on the tiny Wan (same classes as Wan 2.1)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dreamvideo_cli.adapters import (
    AdapterSet,
    ParallelAdapter,
    add_placeholder_token,
    remove_placeholder_tokens,
)
from dreamvideo_cli.backbone import Components
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.objectives import FlowMatchObjective
from dreamvideo_cli.runtime import encode_text, tokenize
from dv_wan.backbones import TinyWanBackbone, WanBackbone
from dv_wan.family import IDENTITY_SLOTS, MOTION_SLOTS


@pytest.fixture(scope="module")
def parts() -> Components:
    return TinyWanBackbone().load("cpu")


def _inputs(parts: Components, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, parts.codec.channels, 3, 4, 4, generator=g)  # 9 frames at 32x32
    t = torch.tensor([500.0, 120.0][:batch])
    context = torch.randn(batch, 32, 32, generator=g)
    return x, t, context


def _randomise(adapters: AdapterSet) -> None:
    with torch.no_grad():
        for p in adapters.parameters():
            p.normal_(std=0.05, generator=torch.Generator().manual_seed(p.numel()))


def test_sites_slots_and_counts(parts: Components) -> None:
    sites = TinyWanBackbone().adapter_sites(parts.denoiser)
    blocks = len(parts.denoiser.blocks)  # type: ignore[arg-type]
    assert [s.path for s in sites if s.kind == "identity"] == [f"blocks.{i}" for i in range(blocks)]
    assert all(s.slots == IDENTITY_SLOTS for s in sites if s.kind == "identity")
    assert all(s.slots == MOTION_SLOTS for s in sites if s.kind == "motion")
    identity = AdapterSet.for_backbone("identity", sites, None, TinyWanBackbone.adapter_design)
    motion = AdapterSet.for_backbone("motion", sites, parts.appearance_dim, TinyWanBackbone.adapter_design)
    from dreamvideo_cli.adapters import adapter_parameter_counts

    counts = adapter_parameter_counts(sites, parts.appearance_dim, TinyWanBackbone.adapter_design)
    assert counts["identity"] == identity.parameter_count()
    assert counts["motion"] == motion.parameter_count()


def test_zero_adapters_are_bit_identical_and_detach_restores(parts: Components) -> None:
    model: Any = parts.denoiser
    x, t, context = _inputs(parts)
    with torch.no_grad():
        before = parts.denoise(x, t, context)
    originals = {i: (b.attn1, b.attn2, b.ffn, b.norm2) for i, b in enumerate(model.blocks)}
    sites = TinyWanBackbone().adapter_sites(model)
    identity = AdapterSet.for_backbone("identity", sites, None, TinyWanBackbone.adapter_design).attach(model)
    motion = AdapterSet.for_backbone("motion", sites, parts.appearance_dim, TinyWanBackbone.adapter_design).attach(
        model
    )
    motion.set_appearance(torch.randn(2, parts.appearance_dim))
    assert isinstance(model.blocks[0].attn2, ParallelAdapter) and isinstance(model.blocks[0].norm2, torch.nn.Identity)
    assert isinstance(model.blocks[0].attn1, ParallelAdapter) and isinstance(model.blocks[0].ffn, ParallelAdapter)
    with torch.no_grad():
        at_zero = parts.denoise(x, t, context)
    assert torch.equal(before, at_zero)
    _randomise(identity)
    _randomise(motion)
    with torch.no_grad():
        changed = parts.denoise(x, t, context)
    assert not torch.allclose(changed, before)
    motion.detach()
    identity.detach()
    for i, b in enumerate(model.blocks):
        assert (b.attn1, b.attn2, b.ffn, b.norm2) == originals[i]
    with torch.no_grad():
        assert torch.equal(parts.denoise(x, t, context), before)


def test_identity_adapter_reads_x_before_norm2(parts: Components) -> None:
    """The wrapper computes attn2(norm2(x)) + adapter(x): check against a hand-written block."""
    model: Any = parts.denoiser
    block = model.blocks[0]
    sites = [s for s in TinyWanBackbone().adapter_sites(model) if s.path == "blocks.0"]
    identity = AdapterSet.for_backbone("identity", sites, None, TinyWanBackbone.adapter_design)
    _randomise(identity)
    x = torch.randn(2, 5, block.norm2.normalized_shape[0])
    text = torch.randn(2, 7, block.norm2.normalized_shape[0])
    adapter = identity.adapters["blocks__0__attn2"]
    with torch.no_grad():
        want = block.attn2(block.norm2(x.float()), text) + adapter(x)
        identity.attach(model)
        got = block.attn2(block.norm2(x.float()).type_as(x), text)
    identity.detach()
    torch.testing.assert_close(got, want)


def test_flow_matching_loss_is_the_definition(parts: Components) -> None:
    """x_s = (1 - s) x0 + s e, target e - x0, the transformer given 1000 s: as diffusers'
    train_dreambooth_lora_sana/flux scripts and finetrainers' flow-matching trainers compute it."""
    x0 = torch.randn(2, parts.codec.channels, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    context = torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        loss = diffusion_loss(parts, x0, context, torch.Generator().manual_seed(3), offset_noise=0.0)
        g = torch.Generator().manual_seed(3)
        noise = torch.randn(x0.shape, generator=g)
        u = torch.sigmoid(torch.randn((2,), generator=g))
        sigma = 3.0 * u / (1 + 2.0 * u)  # the shifted logit-normal sigma, shift 3
        noisy = (1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * noise
        pred = parts.denoiser(
            hidden_states=noisy, timestep=sigma * 1000, encoder_hidden_states=context, return_dict=False
        )[0]
        want = ((pred.float() - (noise - x0)) ** 2).mean()
    torch.testing.assert_close(loss, want)
    objective = parts.objective
    assert isinstance(objective, FlowMatchObjective)
    xt = objective.add_noise(x0, noise, sigma)
    torch.testing.assert_close(objective.predicted_x0(xt, noise - x0, sigma), x0)


def test_codec_compresses_time_and_space(parts: Components) -> None:
    codec = parts.codec
    assert (codec.spatial_factor, codec.temporal_factor, codec.channels) == (8, 4, 16)
    assert [codec.latent_frames(f) for f in (1, 5, 9, 81)] == [1, 2, 3, 21]
    assert codec.accepts_frames(9) and not codec.accepts_frames(8)
    frames = torch.rand(9, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    latents = codec.encode_video(frames)
    assert latents.shape == (16, 3, 4, 4)
    photos = codec.encode_images(frames[:3])
    assert photos.shape == (3, 16, 1, 4, 4)
    # A photo is a one-frame video: the same latents either way.
    torch.testing.assert_close(photos[1], codec.encode_video(frames[1:2]))
    video = codec.decode_video(latents)
    assert video.shape == (9, 32, 32, 3) and video.dtype.name == "uint8"


def test_textual_inversion_on_a_t5_vocabulary() -> None:
    """T5 tables have spare rows past the tokenizer's ids: the new token lands in one; only
    its vector learns; padded positions stay zero in the context."""
    parts = TinyWanBackbone().load("cpu")
    base = parts.text_encoder.get_input_embeddings()
    table = base.weight.detach().clone()
    placeholder = add_placeholder_token(parts.tokenizer, parts.text_encoder, "<rex>", "dog")
    token_id = parts.tokenizer.convert_tokens_to_ids("<rex>")
    assert token_id < base.num_embeddings and placeholder.first_id == token_id
    tokens = tokenize(parts, ["a <rex> on the beach"])
    assert int((tokens.ids == token_id).sum()) == 1
    placeholder.vectors.requires_grad_(True)
    context = encode_text(parts, tokens)
    length = int(tokens.mask.sum())  # type: ignore[union-attr]
    assert torch.count_nonzero(context[0, length:]) == 0 and torch.count_nonzero(context[0, :length]) > 0
    context.sum().backward()
    assert placeholder.vectors.grad is not None and placeholder.vectors.grad.abs().sum() > 0
    assert all(p.grad is None for p in parts.text_encoder.parameters() if p is not placeholder.vectors)
    assert torch.equal(base.weight, table)
    remove_placeholder_tokens(parts.tokenizer, parts.text_encoder)
    assert parts.text_encoder.get_input_embeddings() is base


def test_meta_construction_of_the_real_sizes() -> None:
    from dreamvideo_cli.adapters import adapter_parameter_counts

    backbone = WanBackbone()
    denoiser = backbone.build_denoiser("meta")
    assert sum(p.numel() for p in denoiser.parameters()) == 1_418_996_800
    sites = backbone.adapter_sites(denoiser)
    assert len(sites) == 60 and {s.width for s in sites} == {1536}
    counts = adapter_parameter_counts(sites, 1024, WanBackbone.adapter_design)
    # per block: identity 2*1536*128 + 128 + 1536; motion 2 x (that + 1025 * 128)
    assert counts["identity"] == 30 * (2 * 1536 * 128 + 128 + 1536)
    assert counts["motion"] == 30 * 2 * (2 * 1536 * 128 + 128 + 1536 + 1025 * 128)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    """Each Wan block re-run in the backward pass: same loss and adapter gradients, and the
    blocks are restored afterwards."""
    from dreamvideo_cli.speed import Checkpointed, gradient_checkpointing

    def grads(enabled: bool) -> tuple[float, dict[str, torch.Tensor]]:
        parts = TinyWanBackbone().load("cpu")
        sites = TinyWanBackbone().adapter_sites(parts.denoiser)
        motion = AdapterSet.for_backbone("motion", sites, parts.appearance_dim, TinyWanBackbone.adapter_design)
        _randomise(motion)
        motion.attach(parts.denoiser)
        motion.set_appearance(torch.randn(2, parts.appearance_dim, generator=torch.Generator().manual_seed(4)))
        x0, _, context = _inputs(parts)
        with gradient_checkpointing(parts.denoiser, parts.family, enabled=enabled):
            assert any(isinstance(m, Checkpointed) for m in parts.denoiser.modules()) == enabled
            loss = diffusion_loss(parts, x0, context, torch.Generator().manual_seed(1), 0.1)
            loss.backward()
        assert not any(isinstance(m, Checkpointed) for m in parts.denoiser.modules())
        motion.detach()
        return loss.item(), {n: p.grad.clone() for n, p in motion.named_parameters() if p.grad is not None}

    loss_a, grads_a = grads(False)
    loss_b, grads_b = grads(True)
    assert loss_a == loss_b and grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name])
