"""The live-bytes memory tracker (dreamvideo_cli.memory): storages counted once and freed when
they die, categories, the peak's moment, and fake runs (FakeTensorMode) predicting real ones
byte for byte, on the tiny UNet3D and the tiny Wan transformer with adapters attached."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils.checkpoint import checkpoint

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import Backbone
from dreamvideo_cli.memory import PLANNING_DEVICES, Category, MemoryReport, MemoryTracker, materialize, track
from dreamvideo_cli.memory.fake import CudaRules, checkpoint_contexts, fake_cuda_autocast, gpu_autocast
from dreamvideo_cli.testing import TinyBackbone

F32 = 4  # bytes per float32 element


# -- the bookkeeping ------------------------------------------------------------------
def test_storages_are_counted_once_and_freed_when_they_die() -> None:
    tracker = MemoryTracker()
    with tracker:
        a = torch.ones(1000)  # 4000 bytes
        views = [a[:10], a.view(10, 100), a[::2]]  # the same storage
        assert tracker.live("cpu") == 1000 * F32
        b = a + 1  # a new storage
        assert tracker.live("cpu") == 2000 * F32
        del a, views
        assert tracker.live("cpu") == 1000 * F32  # a's storage died with its last view
        b.mul_(2)  # in place: no new storage
        assert tracker.live("cpu") == 1000 * F32
        b.resize_(2000)  # grown in place: the storage is counted at its new size
        assert tracker.live("cpu") == 2000 * F32
        del b
    report = tracker.report()
    cpu = report.devices["cpu"]
    assert cpu.peak == 2000 * F32
    assert cpu.end == 0
    assert cpu.at_peak[Category.ACTIVATION] == 2000 * F32
    assert cpu.moment is not None and cpu.moment.phase == "forward"
    json.dumps(report.as_dict())  # plain data


def test_tensors_made_before_tracking_count_only_when_registered() -> None:
    cache = torch.zeros(256)  # e.g. cached latents
    unseen = torch.zeros(512)
    tracker = MemoryTracker()
    tracker.register(cache)
    tracker.add_fixed("cpu", 100)  # a cost no tensor shows
    with tracker, tracker.section("encode"):
        out = cache * 2 + unseen.sum()
    report = tracker.report()
    cpu = report.devices["cpu"]
    assert cpu.start == 256 * F32 + 100
    assert cpu.at_peak[Category.CACHE] == 256 * F32 + 100
    assert cpu.peak == 3 * 256 * F32 + F32 + 100  # cache, cache * 2, the sum, out; the fixed cost
    assert cpu.moment is not None and cpu.moment.section == "encode"
    assert out.shape == (256,)


def test_categories_of_a_training_step() -> None:
    torch.manual_seed(0)
    frozen = nn.Linear(64, 64).requires_grad_(False)  # 64*64 + 64 floats
    adapter = nn.Linear(64, 8)  # 64*8 + 8 floats trainable
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-3)
    x = torch.randn(32, 64)
    tracker = MemoryTracker()
    tracker.register(frozen, adapter, optimizer)
    tracker.register(x, category=Category.CACHE)
    frozen_bytes = (64 * 64 + 64) * F32
    trainable_bytes = (64 * 8 + 8) * F32

    def step() -> None:
        loss = adapter(frozen(x)).square().mean()
        loss.backward()
        optimizer.step()

    with tracker:
        step()
        cpu = tracker.report().devices["cpu"]
        assert cpu.largest[Category.GRADIENT] == trainable_bytes
        # exp_avg and exp_avg_sq per parameter, plus a step counter per parameter
        assert tracker.report().devices["cpu"].end >= frozen_bytes + 4 * trainable_bytes
        optimizer.zero_grad(set_to_none=True)
    cpu = tracker.report().devices["cpu"]
    assert cpu.at_peak[Category.FROZEN] == frozen_bytes
    assert cpu.at_peak[Category.TRAINABLE] == trainable_bytes
    assert cpu.largest[Category.OPTIMIZER] >= 2 * trainable_bytes
    end = cpu.end - frozen_bytes - trainable_bytes - 32 * 64 * F32
    assert end == 2 * trainable_bytes + 2 * F32  # gradients freed; Adam's state and steps remain
    assert cpu.moment is not None and cpu.moment.phase in ("backward", "optimizer")


def test_frozen_parameters_are_accepted() -> None:
    """torch's MemTracker raises on frozen parameters; this tracker counts them as FROZEN."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    model[0].requires_grad_(False)
    report = track(lambda: model(torch.randn(2, 8)).sum().backward(), model)
    cpu = report.devices["cpu"]
    assert cpu.at_peak[Category.FROZEN] == (64 + 8) * F32
    assert cpu.at_peak[Category.TRAINABLE] == (64 + 8) * F32
    assert cpu.largest[Category.GRADIENT] == (64 + 8) * F32


def test_wrapper_subclasses_count_their_inner_tensors() -> None:
    from torch.testing._internal.two_tensor import TwoTensor  # a wrapper of two tensors

    tracker = MemoryTracker()
    with tracker:
        pair = TwoTensor(torch.ones(100), torch.ones(100))
        doubled = pair * 2
    assert tracker.report().devices["cpu"].peak == 4 * 100 * F32
    assert isinstance(doubled, TwoTensor)


def test_cuda_sizes_round_to_the_allocator_block() -> None:
    tracker = MemoryTracker(devices={"cpu": "cuda"})
    with FakeTensorMode(), tracker:
        small = torch.empty(3)  # 12 bytes: one 512-byte block on CUDA
        large = torch.empty(200)  # 800 bytes -> 1024
    assert tracker.report().devices["cuda"].peak == 512 + 1024
    assert small.shape == (3,) and large.shape == (200,)


# -- fake runs predict real ones -------------------------------------------------------
def _wrap_checkpointed(backbone: Backbone, denoiser: nn.Module) -> None:
    """Activation checkpointing of the layers the family names (as dv's speed module does),
    the recomputation under the same rules as the forward (`checkpoint_contexts`)."""

    class Checkpointed(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return checkpoint(self.module, *args, use_reentrant=False, context_fn=checkpoint_contexts, **kwargs)

    for parent, key in backbone.family().checkpoint_targets(denoiser):
        if isinstance(key, int):
            parent[key] = Checkpointed(parent[key])
        else:
            setattr(parent, key, Checkpointed(getattr(parent, key)))


def _adapter_step(
    backbone: Backbone,
    fake: bool,
    kind: str = "motion",
    latent_shape: tuple[int, ...] = (1, 4, 8, 4, 4),
    context_shape: tuple[int, ...] = (1, 16, 32),
    steps: int = 2,
    checkpointed: bool = False,
    frozen_dtype: torch.dtype = torch.float32,
) -> MemoryReport:
    """One adapter training step as dv runs it (frozen denoiser in eval mode, fp32 adapters,
    AdamW, the diffusion MSE), `steps` times, tracked. Real tensors, or fake ones built
    from the meta device without weights. A bf16 denoiser runs as on a GPU: autocast with
    CUDA's rules (`CudaRules`, `gpu_autocast`)."""
    on_gpu = frozen_dtype != torch.float32
    autocast: Callable[[], AbstractContextManager[Any]] = gpu_autocast if on_gpu else nullcontext
    mode = FakeTensorMode() if fake else None
    if mode is None:
        torch.manual_seed(0)
        denoiser = backbone.build_denoiser("cpu")
    else:
        denoiser = backbone.build_denoiser("meta")
    denoiser = denoiser.to(frozen_dtype).requires_grad_(False).eval()
    sites = backbone.adapter_sites(denoiser)
    with torch.device("meta") if fake else nullcontext():
        adapters = AdapterSet.for_backbone(kind, sites, backbone.appearance_dim, backbone.adapter_design)  # type: ignore[arg-type]
    ctx = mode if mode is not None else nullcontext()
    with ctx:
        if fake:
            materialize(denoiser, "cpu")
            materialize(adapters, "cpu")
        adapters.attach(denoiser)
        if checkpointed:
            _wrap_checkpointed(backbone, denoiser)
        optimizer = torch.optim.AdamW(adapters.parameters(), lr=1e-4)
        x0 = torch.randn(latent_shape)  # [B, C, F', h, w] cached latents
        context = torch.randn(context_shape).to(frozen_dtype)  # [B, T, D] cached text
        appearance = torch.randn(latent_shape[0], backbone.appearance_dim)  # [B, C']
    tracker = MemoryTracker()
    tracker.register(denoiser, adapters, optimizer)
    tracker.register(x0, context, appearance, category=Category.CACHE)
    generator = torch.Generator().manual_seed(0)
    family = backbone.family()

    def step() -> None:
        with autocast():
            adapters.set_appearance(appearance if kind == "motion" else None)
            noise = torch.randn(x0.shape, generator=generator)
            t = torch.randint(0, 1000, (x0.shape[0],), generator=generator)
            xt = x0 * 0.9 + noise * 0.1
            pred = family.denoise(denoiser, xt.to(frozen_dtype), t, context)
            loss = ((pred.float() - noise) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with ctx, tracker, CudaRules() if on_gpu else nullcontext():
        for _ in range(steps):
            step()
    return tracker.report()


def _assert_same(fake: MemoryReport, real: MemoryReport) -> None:
    f, r = fake.devices["cpu"], real.devices["cpu"]
    assert f.peak == r.peak
    assert dict(f.at_peak) == dict(r.at_peak)
    assert dict(f.largest) == dict(r.largest)
    assert f.end == r.end
    assert f.moment is not None and r.moment is not None
    assert (f.moment.phase, f.moment.op, f.moment.where) == (r.moment.phase, r.moment.op, r.moment.where)


@pytest.mark.parametrize("kind", ["identity", "motion"])
def test_fake_step_predicts_the_real_one_exactly_unet3d(kind: str) -> None:
    backbone = TinyBackbone()
    real = _adapter_step(backbone, fake=False, kind=kind)
    fake = _adapter_step(backbone, fake=True, kind=kind)
    _assert_same(fake, real)
    cpu = real.devices["cpu"]
    assert cpu.at_peak[Category.ACTIVATION] > 0
    assert cpu.at_peak[Category.OPTIMIZER] > 0  # the second step's peak holds the first's state


def test_fake_step_predicts_the_real_one_with_checkpointing_and_gpu_autocast() -> None:
    """bf16 frozen weights, fp32 adapters, autocast with CUDA's rules, checkpointed layers."""
    backbone = TinyBackbone()
    real = _adapter_step(backbone, fake=False, steps=1, checkpointed=True, frozen_dtype=torch.bfloat16)
    fake = _adapter_step(backbone, fake=True, steps=1, checkpointed=True, frozen_dtype=torch.bfloat16)
    _assert_same(fake, real)
    plain = _adapter_step(backbone, fake=True, steps=1, frozen_dtype=torch.bfloat16)
    assert fake.devices["cpu"].peak < plain.devices["cpu"].peak  # checkpointing saves memory


@pytest.mark.parametrize("kind", ["identity", "motion"])
def test_fake_step_predicts_the_real_one_exactly_wan(kind: str) -> None:
    from dv_wan.backbones import TinyWanBackbone

    backbone = TinyWanBackbone()
    shapes = {"latent_shape": (1, 16, 3, 4, 4), "context_shape": (1, 32, 32)}  # 9 frames 32x32, 32 tokens
    real = _adapter_step(backbone, fake=False, kind=kind, **shapes)
    fake = _adapter_step(backbone, fake=True, kind=kind, **shapes)
    _assert_same(fake, real)


def _profiler_peak(fn: Callable[[], Any]) -> int:
    """The CPU allocator's largest total of bytes allocated while profiling `fn`, as
    torch.profiler records it with profile_memory=True."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    peak = 0
    stack = list(prof.profiler.kineto_results.experimental_event_tree())  # type: ignore[union-attr]
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            peak = max(peak, event.extra_fields.total_allocated)
        stack.extend(event.children)
    return peak


def test_the_tracker_agrees_with_the_profiler() -> None:
    """What a real step allocates at its peak by torch.profiler (profile_memory=True) equals
    the tracker's peak above what was live before, within 0.1% (the fake run equals the
    real one exactly: the tests above)."""
    backbone = TinyBackbone()
    torch.manual_seed(0)
    denoiser = backbone.build_denoiser("cpu").requires_grad_(False).eval()
    adapters = AdapterSet.for_backbone("motion", backbone.adapter_sites(denoiser), 16, backbone.adapter_design)
    adapters.attach(denoiser)
    optimizer = torch.optim.AdamW(adapters.parameters(), lr=1e-4)
    x0, context = torch.randn(1, 4, 8, 4, 4), torch.randn(1, 16, 32)
    adapters.set_appearance(torch.randn(1, 16))

    def step() -> None:
        pred = denoiser(x0, torch.tensor([10]), encoder_hidden_states=context).sample
        ((pred - x0) ** 2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # Adam's state exists from here on, as in every later step
    profiled = _profiler_peak(step)
    tracked = track(step, denoiser, adapters, optimizer, x0, context, adapters.condition.embedding).devices["cpu"]
    assert abs((tracked.peak - tracked.start) - profiled) <= 0.001 * profiled


# -- planning a GPU run on this CPU ---------------------------------------------------
def test_fake_cuda_cannot_run_a_backward_pass_without_a_driver() -> None:
    """Why the planner uses fake CPU tensors for the GPU: with torch 2.15 and no CUDA driver,
    FakeTensorMode makes CUDA tensors and runs forward passes, but the autograd engine asks
    CUDA for a primary context and raises. If this starts passing, fake CUDA can replace the
    stand-in."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA driver is present")
    with FakeTensorMode():
        layer = nn.Linear(4, 4, device="cuda")
        loss = layer(torch.randn(2, 4, device="cuda")).sum()
        with pytest.raises(RuntimeError, match="hasPrimaryContext"):
            loss.backward()


_PROBES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp, "rsqrt": lambda x: x.rsqrt(), "pow": lambda x: x**2, "log": torch.log, "silu": F.silu,
    "gelu": F.gelu, "sigmoid": torch.sigmoid, "softmax": lambda x: F.softmax(x, -1),
    "x.softmax": lambda x: x.softmax(-1), "log_softmax": lambda x: F.log_softmax(x, -1), "sum": lambda x: x.sum(-1),
    "mean": lambda x: x.mean(-1), "cumsum": lambda x: x.cumsum(-1), "layer_norm": lambda x: F.layer_norm(x, x.shape[-1:]),
    "group_norm": lambda x: F.group_norm(x, 2), "rms_norm": lambda x: F.rms_norm(x, x.shape[-1:]),
    "nearest": lambda x: F.interpolate(x, scale_factor=2.0), "area": lambda x: F.interpolate(x, scale_factor=0.5, mode="area"),
    "bilinear": lambda x: F.interpolate(x, scale_factor=2.0, mode="bilinear"), "mse_loss": lambda x: F.mse_loss(x, x),
    "norm": lambda x: x.norm(), "matmul": lambda x: x @ x.transpose(-1, -2), "conv2d": lambda x: F.conv2d(x, x[:2, :, :1, :1]),
    "linear": lambda x: F.linear(x, x[0, 0]), "add_fp32": lambda x: x + x.float(), "tanh": torch.tanh,
}  # fmt: skip


def test_cuda_rules_match_cuda_autocast() -> None:
    """Each probe's output dtype under CUDA autocast itself (on fake CUDA tensors: a forward
    needs no driver) equals the dtype on fake CPU tensors under `gpu_autocast`."""
    mode = FakeTensorMode()
    for name, probe in _PROBES.items():
        with mode:
            x = torch.randn(3, 4, 8, 8, device="cuda", dtype=torch.bfloat16)
            with fake_cuda_autocast():
                on_cuda = probe(x).dtype
            with CudaRules(), gpu_autocast():
                on_stand_in = probe(torch.randn(3, 4, 8, 8, dtype=torch.bfloat16)).dtype
        assert on_stand_in == on_cuda, name


def test_forward_on_the_stand_in_matches_fake_cuda() -> None:
    """The tiny UNet's forward with bf16 weights and fp32 adapters: live bytes and peak on fake
    CPU tensors under `gpu_autocast` equal those on fake CUDA tensors under CUDA autocast.
    (Classic attention on both: fake CUDA's SDPA falls back to the math kernel, which
    materialises attention matrices no real CUDA run does.)"""
    from diffusers.models.attention_processor import AttnProcessor

    def forward(device: str) -> tuple[int, int]:
        backbone = TinyBackbone()
        denoiser = backbone.build_denoiser("meta").to(torch.bfloat16).requires_grad_(False).eval()
        denoiser.set_attn_processor(AttnProcessor())
        with torch.device("meta"):
            adapters = AdapterSet.for_backbone("motion", backbone.adapter_sites(denoiser), 16, backbone.adapter_design)
        mode = FakeTensorMode()
        with mode:
            materialize(denoiser, device)
            materialize(adapters, device)
            adapters.attach(denoiser)
            x = torch.randn(1, 4, 8, 4, 4, device=device, dtype=torch.bfloat16)
            context = torch.randn(1, 16, 32, device=device, dtype=torch.bfloat16)
            adapters.set_appearance(torch.randn(1, 16, device=device))
        tracker = MemoryTracker(devices={device: "cuda"}, granularity={})
        tracker.register(denoiser, adapters, x, context)
        with mode, tracker:
            if device == "cuda":
                with fake_cuda_autocast():
                    pred = denoiser(x, torch.tensor([10], device=device), encoder_hidden_states=context).sample
            else:
                with CudaRules(), gpu_autocast():
                    pred = denoiser(x, torch.tensor([10]), encoder_hidden_states=context).sample
            live = tracker.live("cuda")
        assert pred.dtype == torch.bfloat16
        return live, tracker.report().devices["cuda"].peak

    assert forward("cpu") == forward("cuda")


def test_planning_devices_split_gpu_and_host() -> None:
    """Fake "cpu" tensors count as the GPU, fake "meta" ones as host memory: an offload to the
    host and a host-resident latent cache count to the host."""
    mode = FakeTensorMode()
    with mode:
        latents = torch.empty(1024, device="meta")  # a latent cache kept on the host
        weights = torch.empty(3000, device="meta")  # pinned host copies of swapped blocks
    tracker = MemoryTracker(devices=PLANNING_DEVICES)
    tracker.register(latents, category=Category.CACHE)
    tracker.register(weights, category=Category.FROZEN, pinned=True)  # 12000 bytes pinned -> 16384
    with mode, tracker:
        on_gpu = latents.to("cpu")  # copied to the GPU for a step
        activation = on_gpu * 2
        offloaded = activation.to("meta")  # saved on the host (activation offload)
        del activation
    report = tracker.report()
    assert report.gpu is not None and report.gpu.device == "cuda" and report.host is not None
    assert report.host.at_peak[Category.CACHE] == 1024 * F32
    assert report.host.at_peak[Category.FROZEN] == 16384
    assert report.host.peak == (1024 + 1024) * F32 + 16384
    assert report.gpu.peak == 2 * 1024 * F32  # 512-byte multiples already
    assert offloaded.device.type == "meta"


def test_materialize_builds_fake_weights_from_meta() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8))
    model = model.to(device="meta")
    model[2].weight = model[0].weight  # tied
    model[1].to(torch.float64)
    model[0].requires_grad_(False)
    with FakeTensorMode():
        materialize(model, "cpu")
    weights = [p for p in model.parameters()]
    assert all(isinstance(p, FakeTensor) and p.device.type == "cpu" for p in weights)
    assert model[2].weight is model[0].weight
    assert model[1].weight.dtype == torch.float64
    assert not model[0].weight.requires_grad and model[2].bias.requires_grad
