"""The memory levers (dreamvideo_cli/memory/levers.py): fp8 storage of frozen linears within a
measured error, block swap and activation offload exactly (the same losses, gradients, adapters
and samples as without them), block swap's order of residency, and all three under the
planner's fake tensors."""

from __future__ import annotations

import types
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from dreamvideo_cli.adapters import AdapterSet, IdentityAdapter, MotionAdapter
from dreamvideo_cli.backbone import AdapterKind, Backbone, Components
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.memory import PLANNING_DEVICES, Category, MemoryTracker, materialize
from dreamvideo_cli.memory.block_swap import BlockSwap, SwapEvent, storage_key
from dreamvideo_cli.memory.fp8 import FP8, Fp8Linear, dequantize, fp8_targets, quantize
from dreamvideo_cli.memory.levers import AppliedLevers, MemoryLevers, apply_levers, levers_applied, store_fp8
from dreamvideo_cli.memory.offload import ActivationOffload, Offloaded
from dreamvideo_cli.memory.units import family_units
from dreamvideo_cli.speed import gradient_checkpointing
from dreamvideo_cli.testing import TinyBackbone

BACKBONES = ["tiny", "tiny-wan"]


def _backbone(name: str) -> Backbone:
    if name == "tiny":
        return TinyBackbone()
    from dv_wan.backbones import TinyWanBackbone

    return TinyWanBackbone()


def _inputs(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cached latents x0 [B, C, F', h, w], text context [B, T, D], appearance [B, C']."""
    g = torch.Generator().manual_seed(0)
    if name == "tiny":
        x0, context = torch.randn(2, 4, 4, 16, 16, generator=g), torch.randn(2, 16, 32, generator=g)
    else:
        x0, context = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 32, 32, generator=g)
    return x0, context, torch.randn(2, 16, generator=g)


def _adapters(backbone: Backbone, parts: Components) -> list[AdapterSet]:
    """Identity and motion adapters, attached, with non-zero weights (so every adapter gets a
    gradient at the first step)."""
    sites = backbone.adapter_sites(parts.denoiser)
    kinds: tuple[AdapterKind, ...] = ("identity", "motion")
    sets = [AdapterSet.for_backbone(kind, sites, parts.appearance_dim, backbone.adapter_design) for kind in kinds]
    with torch.no_grad():
        for adapters in sets:
            for i, p in enumerate(adapters.parameters()):
                p.normal_(std=0.05, generator=torch.Generator().manual_seed(i))
            adapters.attach(parts.denoiser)
    return sets


@dataclass
class Run:
    losses: list[float]
    grads: dict[str, torch.Tensor]  # the adapters' gradients at the last step
    adapters: dict[str, torch.Tensor]  # the adapters after the last update
    sample: torch.Tensor  # a no_grad denoiser forward after training (sampling)
    applied: AppliedLevers | None


def _train(
    name: str,
    levers: MemoryLevers,
    *,
    checkpointing: bool,
    steps: int = 3,
    swap_copies: bool | None = None,
    levers_inside: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Run:
    """`steps` AdamW steps on identity + motion adapters as the trainer takes them, then one
    sampling forward, all under the levers (fp8 stored right after loading)."""
    backbone = _backbone(name)
    parts = backbone.load("cpu", dtype)
    if levers.fp8:
        assert store_fp8(parts) > 0
    sets = _adapters(backbone, parts)
    params = [p for s in sets for p in s.parameters()]
    where = {id(p): (p.data_ptr(), p.device) for p in params}
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    x0, context, appearance = _inputs(name)
    sets[1].set_appearance(appearance)
    losses: list[float] = []
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    with ExitStack() as stack:
        checkpoint = gradient_checkpointing(parts.denoiser, parts.family, enabled=checkpointing)
        if levers_inside:
            stack.enter_context(checkpoint)
        applied = stack.enter_context(apply_levers(parts, levers, record=True, swap_copies=swap_copies))
        if not levers_inside:
            stack.enter_context(checkpoint)
        for step in range(steps):
            with autocast:
                loss = diffusion_loss(parts, x0, context.to(dtype), torch.Generator().manual_seed(step), 0.1)
            loss.backward()
            grads = {
                f"{i}.{n}": p.grad.clone()
                for i, s in enumerate(sets)
                for n, p in s.named_parameters()
                if p.grad is not None
            }
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        with torch.no_grad(), autocast:
            sample = parts.denoise(x0.to(dtype), torch.tensor([10, 700]), context.to(dtype)).float()
    # Adapters are never moved: the same tensors, in the same place, all along.
    assert all(where[id(p)] == (p.data_ptr(), p.device) for p in params)
    state = {f"{i}.{k}": v for i, s in enumerate(sets) for k, v in s.adapter_state_dict().items()}
    for s in sets:
        s.detach()
    return Run(losses, grads, state, sample, applied)


def _assert_identical(a: Run, b: Run) -> None:
    assert a.losses == b.losses
    assert a.grads.keys() == b.grads.keys() and len(a.grads) > 0
    for key in a.grads:
        assert torch.equal(a.grads[key], b.grads[key]), key
    assert a.adapters.keys() == b.adapters.keys()
    for key in a.adapters:
        assert torch.equal(a.adapters[key], b.adapters[key]), key
    assert torch.equal(a.sample, b.sample)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# -- the flags ------------------------------------------------------------------------------
def test_flags_ask_for_the_levers() -> None:
    assert MemoryLevers().flags() == []
    assert MemoryLevers(fp8=True, blocks_to_swap=4, offload_activations=True).flags() == [
        "--fp8",
        "--blocks-to-swap",
        "4",
        "--offload-activations",
    ]


def test_levers_that_do_not_work_together_are_refused_in_one_line() -> None:
    from dreamvideo_cli.memory.levers import check_combination

    none = {"shard": False, "fp8": False, "blocks_to_swap": 0, "offload_activations": False, "compile": False}
    check_combination(**none)
    check_combination(**{**none, "shard": True})  # with gradient checkpointing, which is not a lever here
    check_combination(**{**none, "fp8": True, "blocks_to_swap": 3, "offload_activations": True})
    refused = [
        ({"shard": True, "fp8": True}, "--shard does not combine"),
        ({"shard": True, "blocks_to_swap": 2}, "--shard does not combine"),
        ({"shard": True, "offload_activations": True}, "--shard does not combine"),
        ({"compile": True, "blocks_to_swap": 2}, "--compile does not combine with --blocks-to-swap"),
        ({"compile": True, "offload_activations": True}, "--compile does not combine with --offload-activations"),
    ]
    for pair, message in refused:
        with pytest.raises(DVError, match=message):
            check_combination(**{**none, **pair})


def test_compile_leaves_out_cuda_graphs_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamvideo_cli import speed

    modes: list[Any] = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: modes.append(kw["mode"]) or model)
    monkeypatch.delenv(speed.COMPILE_BACKEND_ENV, raising=False)
    layer = nn.Linear(2, 2)
    assert speed.compiled_denoiser(layer, False, torch.device("cuda", 0)) is layer
    for graphs in (True, False):
        speed.compiled_denoiser(layer, True, torch.device("cuda", 0), cuda_graphs=graphs)
    speed.compiled_denoiser(layer, True, torch.device("cpu"))
    assert modes == ["reduce-overhead", None, None]


# -- fp8 ------------------------------------------------------------------------------------
def test_quantize_keeps_three_significant_bits_per_block() -> None:
    """Each weight comes back within half an e4m3 step of itself: 2^-4 relative, or the
    subnormal spacing (2^-9 x its block's scale) for the smallest ones."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 256, generator=g) * torch.logspace(-4, 0, 256)  # columns over 4 decades
    codes, scale = quantize(w)
    assert codes.dtype == FP8 and codes.shape == w.shape and scale.shape == (96, 256 // 64)
    back = dequantize(codes, scale, torch.float32)
    bound = 2**-4 * w.abs() + 2**-9 * scale.repeat_interleave(64, dim=1)
    assert bool(((back - w).abs() <= bound * 1.0001).all())
    # Per row when the row does not split into blocks of 64.
    assert quantize(torch.randn(8, 24))[1].shape == (8, 1)


def test_fp8_converts_only_the_blocks_frozen_linears() -> None:
    """Attention and feed-forward linears inside the family's units become Fp8Linear; norms,
    embeddings, the time-embedding projection of UNet resnets, the patch embedding, the
    final projection and the adapters keep their dtype."""
    for name in BACKBONES:
        backbone = _backbone(name)
        parts = backbone.load("cpu")
        targets = {id(linear) for _, _, linear in fp8_targets(parts.denoiser, parts.family)}
        in_units = {id(m) for unit in family_units(parts.denoiser, parts.family) for m in unit.modules()}
        assert targets and targets <= in_units
        store_fp8(parts)
        sets = _adapters(backbone, parts)
        converted = [n for n, m in parts.denoiser.named_modules() if isinstance(m, Fp8Linear)]
        plain = [n for n, m in parts.denoiser.named_modules() if type(m) is nn.Linear]
        assert len(converted) == len(targets)
        assert not any(k in n for n in converted for k in ("emb", "norm", "adapter"))
        assert "proj_out" not in converted  # the denoiser's final projection (a unit's own may be)
        assert all(isinstance(m, IdentityAdapter | MotionAdapter) for s in sets for m in s.adapters.values())
        if name == "tiny":
            assert any(n.endswith("time_emb_proj") for n in plain)
        else:
            assert all(not n.startswith("blocks.") or ".adapter." in n for n in plain)
            assert any(n.startswith("condition_embedder.") for n in plain) and "proj_out" in plain


def test_fp8_weights_take_half_of_bf16_and_a_quarter_of_fp32() -> None:
    """On a Wan-shaped transformer (width 256: rows split into blocks of 64): 1 byte per weight
    plus a float32 scale per 64 weights, against 2 (bf16) or 4 (fp32)."""
    from diffusers import WanTransformer3DModel

    from dv_wan.family import WAN

    config = {"num_attention_heads": 4, "attention_head_dim": 64, "ffn_dim": 512, "num_layers": 2, "text_dim": 64, "freq_dim": 32}  # fmt: skip
    for dtype, ratio in ((torch.bfloat16, 0.5), (torch.float32, 0.25)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            built: Any = WanTransformer3DModel(**config)
            model = built.to(dtype).requires_grad_(False)
        before = sum(linear.weight.nbytes for _, _, linear in fp8_targets(model, WAN))
        parts: Any = types.SimpleNamespace(denoiser=model, family=WAN)
        saved = store_fp8(parts)
        after = sum(m.weight.nbytes + m.scale.nbytes for m in model.modules() if isinstance(m, Fp8Linear))
        assert before - after == saved
        assert ratio <= after / before <= ratio * (1 + 4 / 64) + 1e-9
        assert all(m.weight.element_size() == 1 for m in model.modules() if isinstance(m, Fp8Linear))


# The relative error of one forward (scripts/fp8_error.py measured 5.1e-2 on tiny, 8.8e-3 on
# tiny-wan, float32), with headroom.
FP8_FORWARD_ERROR = {"tiny": 0.08, "tiny-wan": 0.02}


@pytest.mark.parametrize("name", BACKBONES)
def test_fp8_forward_error_is_within_its_bound(name: str) -> None:
    parts = _backbone(name).load("cpu")
    x0, context, _ = _inputs(name)
    t = torch.tensor([100, 800])
    with torch.no_grad():
        before = parts.denoise(x0, t, context)
        store_fp8(parts)
        after = parts.denoise(x0, t, context)
    error = _relative(after, before)
    assert 1e-4 < error < FP8_FORWARD_ERROR[name]  # converted, and close


# The relative error of the adapters' gradients at the first step against the unconverted model
# (measured 5.8e-2 on tiny, 7.8e-3 on tiny-wan in float32; 5.6e-2 and 1.1e-2 in bf16), with headroom.
FP8_GRADIENT_ERROR = {"tiny": 0.1, "tiny-wan": 0.02}


@pytest.mark.parametrize("name", BACKBONES)
def test_adapters_train_through_fp8_weights(name: str) -> None:
    """Gradients cross every fp8 unit to every adapter, close to the unconverted model's, in
    float32 and in bf16 under autocast (a GPU step's dtypes)."""
    for dtype in (torch.float32, torch.bfloat16):
        runs = [_train(name, MemoryLevers(fp8=fp8), checkpointing=False, steps=1, dtype=dtype) for fp8 in (False, True)]
        for key, grad in runs[1].grads.items():
            assert torch.isfinite(grad).all() and grad.abs().sum() > 0, key
        plain, fp8 = (torch.cat([g.flatten() for g in run.grads.values()]) for run in runs)
        assert _relative(fp8, plain) < FP8_GRADIENT_ERROR[name]


def test_fp8_linears_refuse_a_dtype_cast() -> None:
    linear = Fp8Linear(nn.Linear(64, 8).requires_grad_(False))
    linear.to("cpu")  # moving is fine
    with pytest.raises(RuntimeError, match="cannot change dtype"):
        linear.to(torch.bfloat16)
    with pytest.raises(ValueError, match="only frozen"):
        Fp8Linear(nn.Linear(4, 4))


# -- block swap -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("checkpointing", [False, True])
def test_block_swap_learns_exactly_what_no_swap_learns(name: str, checkpointing: bool) -> None:
    """Losses, gradients, updated adapters and a sampling forward, bit for bit; with real
    copies (swap_copies) and without, and whichever of checkpointing and swap is entered first."""
    plain = _train(name, MemoryLevers(), checkpointing=checkpointing)
    n = len(family_units(_backbone(name).load("cpu").denoiser, _backbone(name).family()))
    for count, copies, inside in ((2, True, False), (n, False, True)):
        swapped = _train(
            name,
            MemoryLevers(blocks_to_swap=count),
            checkpointing=checkpointing,
            swap_copies=copies,
            levers_inside=inside,
        )
        _assert_identical(swapped, plain)
        assert swapped.applied is not None and swapped.applied.swap is not None
        _check_residency(swapped.applied.swap.events, set(range(n - count, n)))
        assert swapped.applied.swap.max_resident <= 2


def _check_residency(events: list[SwapEvent], swapped: set[int]) -> None:
    """No unit computes (forward, recomputation or backward) unless fetched and not released
    since; each swapped unit computed in every forward; all released at the end."""
    resident: set[int] = set()
    computed: set[int] = set()
    for kind, unit in events:
        assert unit in swapped
        if kind == "fetch":
            assert unit not in resident
            resident.add(unit)
        elif kind == "release":
            assert unit in resident
            resident.discard(unit)
        else:
            assert unit in resident, f"unit {unit} {kind} while absent"
            computed.add(unit)
    assert computed == swapped
    assert not resident


def test_block_swap_keeps_weights_on_the_host_and_absent_units_cannot_compute() -> None:
    from dv_wan.backbones import TinyWanBackbone

    backbone = TinyWanBackbone()
    parts = backbone.load("cpu")
    store_fp8(parts)  # fp8 codes, scales and bf16/fp32 biases in one host buffer
    blocks: Any = parts.denoiser.blocks
    before = {k: v.clone() for k, v in blocks[1].state_dict().items()}
    sets = _adapters(backbone, parts)
    x = torch.randn(1, 5, 24)  # [B, tokens, width]
    with BlockSwap(parts.denoiser, parts.family, 1, parts.device, copy=True) as swap:
        host = [b.clone() for b in swap.host_buffers()]
        with pytest.raises(RuntimeError, match="already applied"):
            BlockSwap(parts.denoiser, parts.family, 1, parts.device).__enter__()
        assert swap.host_bytes >= sum(v.nbytes for v in before.values())
        frozen = [p for p in blocks[1].parameters() if not p.requires_grad]
        assert frozen and all(p.numel() == 0 for p in frozen)  # absent: emptied
        assert all(p.numel() > 0 for s in sets for p in s.parameters())  # adapters stay
        with pytest.raises((RuntimeError, ValueError)):  # shapes do not fit: [0] weights
            blocks[1].attn1.sublayer.to_q(x)  # a layer run without its unit's hooks fails loudly
        x0, context, appearance = _inputs("tiny-wan")
        sets[1].set_appearance(appearance)
        diffusion_loss(parts, x0, context, torch.Generator().manual_seed(0), 0.0).backward()
        assert swap.resident() == []
        # Never copied back: the host copy is what it was.
        assert all(torch.equal(a, b) for a, b in zip(host, swap.host_buffers(), strict=True))
    for s in sets:
        s.detach()
    after = blocks[1].state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored on leaving, with its values
    assert all(p.device.type == "cpu" for p in blocks[1].parameters())
    with pytest.raises(DVError, match="blocks-to-swap 3"):
        BlockSwap(parts.denoiser, parts.family, 3, parts.device).__enter__()


def test_block_swap_fetches_one_unit_ahead_in_execution_order() -> None:
    """UNet3D's family lists transformer_in last, but it runs first: after the first pass the
    unit fetched ahead is the next to run, so every compute finds its unit already fetched."""
    parts = TinyBackbone().load("cpu")
    n = len(family_units(parts.denoiser, parts.family))
    x0, context, _ = _inputs("tiny")
    with (
        apply_levers(parts, MemoryLevers(blocks_to_swap=n), record=True, swap_copies=True) as applied,
        torch.no_grad(),
    ):
        swap = applied.swap
        assert swap is not None
        for _ in range(2):
            swap.events.clear()
            parts.denoise(x0, torch.tensor([1, 2]), context)
        events = swap.events
    computes = [u for kind, u in events if kind == "compute"]
    assert computes[0] == n - 1  # transformer_in
    for i, (kind, unit) in enumerate(events):
        if kind == "compute" and i + 1 < len(events) and unit != computes[-1]:
            assert events[i + 1][0] == "fetch"  # the next unit is fetched as this one starts
            assert events[i + 1][1] == computes[computes.index(unit) + 1]
    fetches = [u for kind, u in events if kind == "fetch"]
    assert fetches == computes  # no wrong guess, no unit fetched twice


# -- activation offload ---------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_offload_is_exact(name: str, checkpointing: bool) -> None:
    plain = _train(name, MemoryLevers(), checkpointing=checkpointing)
    offloaded = _train(name, MemoryLevers(offload_activations=True), checkpointing=checkpointing)
    _assert_identical(offloaded, plain)
    assert offloaded.applied is not None and offloaded.applied.offload is not None
    assert offloaded.applied.offload.largest_pass_bytes > 0


def test_offload_copies_activations_never_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without checkpointing every saved activation goes to the host, weights (W^T views) never;
    with checkpointed blocks only the blocks' inputs are saved: far less goes."""
    offloaded: list[torch.Tensor] = []
    pack = ActivationOffload.pack

    def spy(self: ActivationOffload, t: torch.Tensor) -> Offloaded | None:
        packed = pack(self, t)
        if packed is not None:
            offloaded.append(t)
        return packed

    monkeypatch.setattr(ActivationOffload, "pack", spy)
    sizes = {}
    for checkpointing in (False, True):
        offloaded.clear()
        run = _train("tiny-wan", MemoryLevers(offload_activations=True), checkpointing=checkpointing, steps=1)
        assert run.applied is not None and run.applied.offload is not None
        sizes[checkpointing] = run.applied.offload.largest_pass_bytes
        weights = {storage_key(p) for p in run.applied.offload.denoiser.parameters()}
        assert offloaded and not weights & {storage_key(t) for t in offloaded}
    assert sizes[True] < sizes[False] / 3


# -- all three ------------------------------------------------------------------------------
@pytest.mark.parametrize("checkpointing", [False, True])
def test_all_levers_together_on_tiny_wan(checkpointing: bool) -> None:
    """fp8 + block swap + offload learns exactly what fp8 alone learns, and close to the plain run."""
    fp8 = _train("tiny-wan", MemoryLevers(fp8=True), checkpointing=checkpointing)
    everything = _train(
        "tiny-wan", MemoryLevers(fp8=True, blocks_to_swap=1, offload_activations=True), checkpointing=checkpointing
    )
    _assert_identical(everything, fp8)
    plain = _train("tiny-wan", MemoryLevers(), checkpointing=checkpointing)
    assert all(abs(a - b) < 0.02 * abs(b) for a, b in zip(everything.losses, plain.losses, strict=True))


def test_levers_applied_restores_the_model() -> None:
    parts = _backbone("tiny-wan").load("cpu")
    state = {k: v.clone() for k, v in parts.denoiser.state_dict().items()}
    modules = dict(parts.denoiser.named_modules())
    x0, context, _ = _inputs("tiny-wan")
    with torch.no_grad():
        before = parts.denoise(x0, torch.tensor([1, 2]), context)
        with levers_applied(parts, MemoryLevers(blocks_to_swap=2, offload_activations=True)):
            during = parts.denoise(x0, torch.tensor([1, 2]), context)
        after = parts.denoise(x0, torch.tensor([1, 2]), context)
    assert torch.equal(before, during) and torch.equal(before, after)
    assert dict(parts.denoiser.named_modules()) == modules
    now = parts.denoiser.state_dict()
    assert all(torch.equal(state[k], now[k]) for k in state)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in parts.denoiser.modules())


def test_the_planner_runs_the_levers_on_fake_tensors() -> None:
    """Under FakeTensorMode with the planning devices (fake "cpu" for the GPU, fake "meta" for
    the host): the swapped weights leave the GPU's frozen bytes for the host, offloaded
    activations count on the host, and the GPU peak drops."""
    from dv_wan.backbones import TinyWanBackbone

    backbone = TinyWanBackbone()
    family = backbone.family()

    def plan(levers: MemoryLevers) -> tuple[dict[str, Any], int]:
        denoiser = backbone.build_denoiser("meta").requires_grad_(False).eval()
        with torch.device("meta"):
            adapters = AdapterSet.for_backbone("motion", backbone.adapter_sites(denoiser), 16, backbone.adapter_design)
        mode = FakeTensorMode()
        with mode:
            materialize(denoiser, "cpu")
            materialize(adapters, "cpu")
            parts: Any = types.SimpleNamespace(denoiser=denoiser, family=family, device=torch.device("cpu"))
            if levers.fp8:
                store_fp8(parts)
            adapters.attach(denoiser)
            optimizer = torch.optim.AdamW(adapters.parameters(), lr=1e-4)
            x0, context, appearance = torch.randn(1, 16, 3, 8, 8), torch.randn(1, 32, 32), torch.randn(1, 16)
        tracker = MemoryTracker(devices=PLANNING_DEVICES)
        tracker.register(denoiser, adapters, optimizer)
        tracker.register(x0, context, appearance, category=Category.CACHE)
        with mode, apply_levers(parts, levers, host=torch.device("meta")) as applied:
            host_bytes = applied.swap.host_bytes if applied.swap is not None else 0
            if applied.swap is not None:  # made before tracking: register them, as a planner would
                tracker.register(*applied.swap.host_buffers(), category=Category.FROZEN)
            with tracker, gradient_checkpointing(denoiser, family):
                for _ in range(2):
                    adapters.set_appearance(appearance)
                    pred = family.denoise(denoiser, x0, torch.tensor([3]), context)
                    ((pred - x0) ** 2).mean().backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
        return tracker.report().devices, host_bytes  # type: ignore[return-value]

    plain, _ = plan(MemoryLevers())
    swapped, host_bytes = plan(MemoryLevers(fp8=True, blocks_to_swap=2, offload_activations=True))
    assert "cpu" not in plain
    assert swapped["cuda"].peak < plain["cuda"].peak
    assert swapped["cuda"].at_peak[Category.FROZEN] < plain["cuda"].at_peak[Category.FROZEN]
    assert swapped["cpu"].at_peak[Category.FROZEN] == host_bytes > 0
    assert swapped["cpu"].largest[Category.ACTIVATION] > 0  # the blocks' inputs, offloaded
