"""The adapters are placed and behave as the paper and the authors' code say."""

from __future__ import annotations

import pytest
import torch

from dreamvideo_cli.adapters import (
    AdapterSet,
    IdentityAdapter,
    MotionAdapter,
    ParallelAdapter,
    adapter_parameter_count,
    adapter_parameter_counts,
    add_placeholder_token,
    remove_placeholder_tokens,
)
from dreamvideo_cli.backbone import AdapterSite
from dreamvideo_cli.families.unet3d import IDENTITY_SLOTS, MOTION_SLOTS, find_adapter_sites
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.testing import TinyBackbone


@pytest.fixture(scope="module")
def parts():  # type: ignore[no-untyped-def]
    return TinyBackbone().load("cpu")


@pytest.fixture
def unet(parts):  # type: ignore[no-untyped-def]
    return parts.denoiser


def _inputs(frames: int = 4, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, frames, 16, 16, generator=g)
    t = torch.tensor([10, 700][:batch])
    context = torch.randn(batch, 16, 32, generator=g)
    return x, t, context


def _randomise(adapters: AdapterSet) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapters.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_sites_are_every_spatial_cross_attention_and_every_temporal_block(unet) -> None:  # type: ignore[no-untyped-def]
    sites = find_adapter_sites(unet)
    identity = [s for s in sites if s.kind == "identity"]
    motion = [s for s in sites if s.kind == "motion"]
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    n_spatial = sum(isinstance(m, Transformer2DModel) for m in unet.modules())
    n_temporal = sum(isinstance(m, TransformerTemporalModel) for m in unet.modules())
    assert len(identity) == n_spatial > 0
    assert len(motion) == n_temporal > 0
    assert any(s.path.startswith("transformer_in.") for s in motion)
    for site in sites:
        block = unet.get_submodule(site.path)
        assert block.attn1.query_dim == site.width


def test_attaching_at_initialisation_is_bit_identical(parts) -> None:  # type: ignore[no-untyped-def]
    unet = parts.denoiser
    sites = find_adapter_sites(unet)
    x, t, context = _inputs()
    with torch.no_grad():
        before = unet(x, t, encoder_hidden_states=context).sample
    identity = AdapterSet("identity", sites).attach(unet)
    motion = AdapterSet("motion", sites, condition_dim=parts.appearance_dim).attach(unet)
    motion.set_appearance(torch.randn(2, parts.appearance_dim))
    try:
        with torch.no_grad():
            after = unet(x, t, encoder_hidden_states=context).sample
        assert torch.equal(before, after)
    finally:
        motion.detach()
        identity.detach()


def test_trained_adapters_change_the_output_and_detach_restores_it(parts) -> None:  # type: ignore[no-untyped-def]
    unet = parts.denoiser
    sites = find_adapter_sites(unet)
    x, t, context = _inputs()
    with torch.no_grad():
        before = unet(x, t, encoder_hidden_states=context).sample
    for kind in ("identity", "motion"):
        adapters = AdapterSet(kind, sites, condition_dim=parts.appearance_dim)  # type: ignore[arg-type]
        _randomise(adapters)
        adapters.set_appearance(torch.randn(2, parts.appearance_dim))
        adapters.attach(unet)
        with torch.no_grad():
            changed = unet(x, t, encoder_hidden_states=context).sample
        adapters.detach()
        assert not torch.allclose(before, changed)
        with torch.no_grad():
            restored = unet(x, t, encoder_hidden_states=context).sample
        assert torch.equal(before, restored)
        assert not any(isinstance(m, ParallelAdapter) for m in unet.modules())


def test_identity_adapter_reads_the_pre_norm_state_beside_cross_attention(parts) -> None:  # type: ignore[no-untyped-def]
    """x_out = attn2(norm2(x)) + x + up(GELU(down(x))) for a block, checked by hand."""
    sites = [s for s in find_adapter_sites(parts.denoiser) if s.kind == "identity"]
    block = parts.denoiser.get_submodule(sites[0].path)
    d = sites[0].width
    x = torch.randn(2, 5, d)
    context = torch.randn(2, 16, 32)
    with torch.no_grad():
        expected_attn = block.attn2(block.norm2(x), encoder_hidden_states=context)
    adapters = AdapterSet("identity", sites[:1])
    _randomise(adapters)
    adapter = next(iter(adapters.adapters.values()))
    adapters.attach(parts.denoiser)
    try:
        with torch.no_grad():
            got = block.attn2(block.norm2(x), encoder_hidden_states=context)
            manual = expected_attn + adapter.up(torch.nn.functional.gelu(adapter.down(x)))
        assert torch.allclose(got, manual, atol=1e-6)
    finally:
        adapters.detach()


def test_motion_adapter_broadcasts_the_appearance_over_frames_and_positions() -> None:
    from dreamvideo_cli.adapters import AppearanceCondition

    condition = AppearanceCondition()
    adapter = MotionAdapter(8, condition_dim=3, condition=condition)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    h = torch.randn(2 * 6, 4, 8)  # [B*h*w, F, d] with B=2 videos, 6 positions, 4 frames
    e = torch.randn(2, 3)
    condition.set(e)
    got = adapter(h)
    c = adapter.cond(e)  # [2, 8]
    h_e = h + torch.cat([c[0].expand(6, 1, 8), c[1].expand(6, 1, 8)])  # Eq. (3)
    expected = adapter.up(torch.nn.functional.gelu(adapter.down(h_e)))  # Eq. (4), no skip
    assert torch.allclose(got, expected, atol=1e-6)


def test_parameter_counts_match_the_closed_form(parts) -> None:  # type: ignore[no-untyped-def]
    sites = find_adapter_sites(parts.denoiser)
    c = parts.appearance_dim
    identity = AdapterSet("identity", sites)
    motion = AdapterSet("motion", sites, condition_dim=c)
    want_identity = sum(s.width**2 + 3 * s.width // 2 for s in sites if s.kind == "identity")
    want_motion = sum(3 * (s.width**2 + 3 * s.width // 2 + (c + 1) * s.width) for s in sites if s.kind == "motion")
    assert identity.parameter_count() == want_identity
    assert motion.parameter_count() == want_motion
    counts = adapter_parameter_counts(sites, c)
    assert counts == {"identity": want_identity, "motion": want_motion, "total": want_identity + want_motion}


def test_reference_parameter_counts_for_modelscope_widths() -> None:
    """The authors' code on ModelScopeT2V's widths: 12,409,120 identity and 77,966,496
    motion parameters (docs/method.md, docs/backbones.md)."""
    widths = [320] * 5 + [640] * 5 + [1280] * 6
    sites = [AdapterSite(f"s{i}", "identity", w, IDENTITY_SLOTS) for i, w in enumerate(widths)]
    sites += [AdapterSite(f"t{i}", "motion", w, MOTION_SLOTS) for i, w in enumerate([*widths, 512])]
    counts = adapter_parameter_counts(sites, 1024)
    assert counts["identity"] == 12_409_120
    assert counts["motion"] == 77_966_496
    assert sum(3 * (1024 + 1) * s.width for s in sites if s.kind == "motion") == 39_950_400
    assert adapter_parameter_count(AdapterSite("x", "identity", 320, IDENTITY_SLOTS)) == 320 * 320 + 480


def test_up_projection_starts_at_zero() -> None:
    adapter = IdentityAdapter(16)
    assert torch.count_nonzero(adapter.up.weight) == 0
    assert torch.count_nonzero(adapter.up.bias) == 0
    assert torch.count_nonzero(adapter.down.weight) > 0


def test_state_dict_round_trip_and_mismatch(parts) -> None:  # type: ignore[no-untyped-def]
    sites = find_adapter_sites(parts.denoiser)
    a = AdapterSet("motion", sites, condition_dim=parts.appearance_dim)
    _randomise(a)
    b = AdapterSet("motion", sites, condition_dim=parts.appearance_dim)
    b.load_adapter_state_dict(a.adapter_state_dict())
    for (ka, va), (kb, vb) in zip(a.adapter_state_dict().items(), b.adapter_state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert any(k.endswith(".attn1.cond.weight") for k in a.adapter_state_dict())
    identity = AdapterSet("identity", sites)
    with pytest.raises(ValueError, match="do not fit"):
        identity.load_adapter_state_dict(a.adapter_state_dict())


def test_textual_inversion_trains_only_the_new_row() -> None:
    parts = TinyBackbone().load("cpu")
    base = parts.text_encoder.get_input_embeddings()
    frozen_table = base.weight.detach().clone()
    placeholder = add_placeholder_token(parts.tokenizer, parts.text_encoder, "<kitty>", "cat")
    cat_ids = parts.tokenizer("cat", add_special_tokens=False)["input_ids"]
    assert torch.allclose(placeholder.vectors[0], frozen_table[cat_ids].mean(0))
    ids = parts.tokenizer(["a <kitty>"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    assert (ids == placeholder.first_id).sum() == 1
    placeholder.vectors.requires_grad_(True)
    out = parts.text_encoder(ids)[0]
    out.sum().backward()
    assert placeholder.vectors.grad is not None and placeholder.vectors.grad.abs().sum() > 0
    assert all(p.grad is None for p in parts.text_encoder.parameters() if p is not placeholder.vectors)
    assert torch.equal(base.weight, frozen_table)
    remove_placeholder_tokens(parts.tokenizer, parts.text_encoder)
    assert parts.text_encoder.get_input_embeddings() is base


def test_only_adapters_learn_frozen_weights_stay_and_loss_falls() -> None:
    """A short run on a fixed batch: the loss falls, only adapter parameters get
    gradients, and every frozen UNet weight is bit-for-bit unchanged."""
    parts = TinyBackbone().load("cpu")
    unet = parts.denoiser
    frozen = {k: v.clone() for k, v in unet.state_dict().items()}
    sites = find_adapter_sites(unet)
    motion = AdapterSet("motion", sites, condition_dim=parts.appearance_dim).attach(unet)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 4, 16, 16, generator=g)
    context = torch.randn(1, 16, 32, generator=g)
    motion.set_appearance(torch.randn(1, parts.appearance_dim, generator=g))
    optimizer = torch.optim.AdamW(motion.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(30):
        gen = torch.Generator().manual_seed(123)  # the same noise and timestep each step
        loss = diffusion_loss(parts, x0, context, gen, offset_noise=0.1)
        loss.backward()
        trainable = {id(p) for p in motion.parameters()}
        for p in unet.parameters():
            if id(p) not in trainable:
                assert p.grad is None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    motion.detach()
    for k, v in unet.state_dict().items():
        assert torch.equal(v, frozen[k]), k
