"""The memory planner (dreamvideo_cli.plan, `dv plan`): its prediction for a real CPU training
step equals torch.profiler's (tiny, tiny-wan and a 143M-parameter Wan-shaped transformer),
the search for settings that fit, `--shard`, the JSON the command prints and its one-line
errors."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dreamvideo_cli import media
from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import Backbone, VideoFormat
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.events import ignore_events
from dreamvideo_cli.learn.motion import MotionConfig, motion_loss
from dreamvideo_cli.learn.motion_data import MotionClips
from dreamvideo_cli.learn.run_folder import Run
from dreamvideo_cli.learn.trainer import Trainer
from dreamvideo_cli.plan import (
    GiB,
    PhasePlan,
    PlanRequest,
    Settings,
    Split,
    StagePlan,
    Transfer,
    command_line,
    fit,
    plan_stage,
)
from dreamvideo_cli.plan.stages import PHRASE, _write_clip
from dreamvideo_cli.runtime import prepare_denoiser
from dreamvideo_cli.testing import TinyBackbone
from tests.test_memory_tracker import _profiler_peak

# -- a mid-size Wan-shaped model: tiny-wan's codec, text and appearance encoders around a
# 143M-parameter transformer (8 blocks of 8 heads x 128, feed-forward 4096), at 128x128


def _mid_backbone() -> Backbone:
    from dv_wan import tiny
    from dv_wan.backbones import TinyWanBackbone
    from dv_wan.loading import WanParts, _cast_transformer, _freeze

    config = {
        **tiny.tiny_transformer_config(),
        "num_attention_heads": 8,
        "attention_head_dim": 128,
        "ffn_dim": 4096,
        "num_layers": 8,
        "freq_dim": 256,
        "rope_max_seq_len": 1024,
    }

    class MidWanBackbone(TinyWanBackbone):
        name = "mid-wan"
        video_format = VideoFormat(height=128, width=128, frames=9, fps=16)

        def build_denoiser(self, device: str = "meta") -> nn.Module:
            from diffusers import WanTransformer3DModel

            with torch.device(device):
                model: Any = WanTransformer3DModel(**config)
            return model

        def _parts(self, device: torch.device, dtype: torch.dtype) -> WanParts:
            parts = tiny.tiny_parts("cpu", dtype)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                parts.transformer = self.build_denoiser("meta" if device.type == "meta" else "cpu")
            _cast_transformer(parts.transformer, dtype)
            return _freeze(parts, device)

    return MidWanBackbone()


def _backbone(name: str) -> Backbone:
    if name == "tiny":
        return TinyBackbone()
    if name == "tiny-wan":
        from dv_wan.backbones import TinyWanBackbone

        return TinyWanBackbone()
    return _mid_backbone()


def _real_motion_step(backbone: Backbone, frames: int, checkpointing: bool, folder: Path) -> int:
    """torch.profiler's peak for one `dv motion learn` step on the CPU (after a first step made
    AdamW's state): the engine's trainer, `motion_loss` and clip encoding, real weights."""
    torch.manual_seed(0)
    parts = backbone.load("cpu", torch.float32)
    prepare_denoiser(parts)
    fps = backbone.motion_fps
    config = MotionConfig(
        backbone=backbone.name, frames=frames, fps=fps, steps=2, seed=0, gradient_checkpointing=checkpointing
    )
    trainer = Trainer(
        Run.create(folder, "motion", "real", config, folder), backbone, parts, config, ignore_events, resumed=False
    )
    info = media.probe_clip(_write_clip(folder, frames, fps))
    data = MotionClips.encode(parts, backbone.video_format, [info], [PHRASE], frames, fps, ignore_events, backbone.name)
    motion = AdapterSet.for_backbone("motion", trainer.sites, parts.appearance_dim, backbone.adapter_design)
    motion.attach(parts.denoiser)
    params = list(motion.parameters())
    optimizer = trainer.optimizer(params, config.lr)
    loss = motion_loss(trainer, motion, data, config)
    with trainer.session():
        trainer.step_once(params, optimizer, loss)
        return _profiler_peak(lambda: trainer.step_once(params, optimizer, loss))


@pytest.mark.parametrize(
    ("name", "frames", "checkpointing"),
    [("tiny", 8, False), ("tiny", 8, True), ("tiny-wan", 9, False), ("mid-wan", 9, False), ("mid-wan", 9, True)],
)
def test_the_planned_step_is_what_the_profiler_measures(name: str, frames: int, checkpointing: bool) -> None:
    """Issue 26, item 3: the planner's figure for a CPU run's motion step (what it allocates
    above what was live before the step) within 10% of torch.profiler's (profile_memory=True)
    for the same step run for real. They agree within 0.2%."""
    backbone = _backbone(name)
    with tempfile.TemporaryDirectory() as folder:
        measured = _real_motion_step(backbone, frames, checkpointing, Path(folder))
    settings = Settings(gradient_checkpointing=checkpointing)
    request = PlanRequest("motion", backbone.name, frames=frames, device="cpu", settings=settings)
    plan = plan_stage(request, backbone)
    step = next(p for p in plan.phases if p.name == "motion adapter")
    predicted = step.gpu.peak - step.gpu_start
    assert abs(predicted - measured) <= 0.1 * measured, (predicted, measured)


# -- the search ------------------------------------------------------------------------
def _fake_plan(request: PlanRequest, peak: int, load: int = 0, units: int = 10, unit_bytes: int = 100) -> StagePlan:
    phases = (
        PhasePlan("load", Split(weights=load, peak=load), Split()),
        PhasePlan("motion adapter", Split(peak=peak), Split(), transfer=Transfer(host_to_gpu=10**9, flops=4e14)),
    )
    return StagePlan(request, 33, 1, 480, 832, phases, 0.0, units, unit_bytes)


def _peak(s: Settings) -> int:
    """A made-up stage: 3000 bytes, checkpointing -1000, fp8 -500, offload -300, 100 per swapped
    block, plus one block in flight while any is swapped."""
    peak = 3000 - 1000 * s.gradient_checkpointing - 500 * s.fp8 - 300 * s.offload_activations
    return peak - 100 * s.blocks_to_swap + (100 if s.blocks_to_swap else 0)


def test_the_search_takes_the_cheapest_rung_that_fits() -> None:
    calls: list[Settings] = []

    def planner(r: PlanRequest) -> StagePlan:
        calls.append(r.settings)
        return _fake_plan(r, _peak(r.settings))

    request = PlanRequest("motion", "wan-14b", frames=33)
    found = fit(request, 2000, headroom=0, planner=planner)
    assert found.settings == Settings(gradient_checkpointing=True)
    assert calls == [Settings(), Settings(gradient_checkpointing=True)]
    assert (
        found.command() == "dv motion learn CLIPS --name NAME --backbone wan-14b --frames 33 --gradient-checkpointing"
    )
    swap = fit(request, 1000, headroom=0, planner=planner)  # 1200 without swapping: 3 blocks (1200 - 300 + 100)
    assert swap.settings == Settings(True, True, 3, True)
    assert _peak(replace(swap.settings, blocks_to_swap=2)) > 1000  # and 2 would not fit
    assert len(swap.attempts) <= 7
    assert "--blocks-to-swap 3" in (swap.command() or "")
    assert swap.slowdowns()[0].transfer_seconds == pytest.approx(10**9 / 25e9)
    assert fit(request, 100, headroom=0, planner=planner).settings is None  # not even every block swapped


def test_a_sharded_search_tries_only_what_shards() -> None:
    """With --shard the search tries gradient checkpointing alone (fp8, offload and block
    swap are refused with it), and the planner refuses them as the trainer does."""
    request = PlanRequest("motion", "tiny", frames=8, shard=True, processes=2)
    found = fit(request, 2**20)  # 1 MiB: nothing fits
    assert found.settings is None and "with --shard" in found.reason
    assert [a.settings for a in found.attempts] == [Settings(), Settings(gradient_checkpointing=True)]
    with pytest.raises(DVError, match="--shard does not combine"):
        plan_stage(replace(request, settings=Settings(offload_activations=True)))


def test_the_search_stops_when_loading_alone_does_not_fit() -> None:
    calls = []

    def planner(r: PlanRequest) -> StagePlan:
        calls.append(r.settings)
        return _fake_plan(r, _peak(r.settings), load=5000)

    found = fit(PlanRequest("motion", "wan-14b"), 4000, headroom=0, planner=planner)
    assert found.settings is None and len(calls) == 1
    assert found.reason.startswith("load needs")


def test_command_lines() -> None:
    settings = Settings(True, True, 12, False)
    subject = PlanRequest("subject", "wan", batch_size=2, processes=2, shard=True, settings=settings)
    assert command_line(subject) == (
        "torchrun --nproc-per-node 2 -m dreamvideo_cli subject learn PHOTOS --name NAME --backbone wan "
        "--batch-size 2 --shard --gradient-checkpointing --fp8 --blocks-to-swap 12"
    )
    compose = PlanRequest("compose", "wan", frames=81, settings=settings)
    assert command_line(compose) == 'dv compose SUBJECT MOTION "PROMPT" --frames 81 --fp8 --blocks-to-swap 12'


# -- planning for real (on tiny models) -------------------------------------------------
def test_shard_holds_a_share_of_the_denoiser_and_one_block_whole() -> None:
    one = plan_stage(PlanRequest("motion", "tiny", frames=4))
    two = plan_stage(PlanRequest("motion", "tiny", frames=4, processes=2, shard=True))
    denoiser = TinyBackbone().build_denoiser("meta").to(torch.bfloat16)
    whole = sum(p.numel() * p.element_size() for p in denoiser.parameters())
    for a, b in zip(one.phases, two.phases, strict=True):
        assert 0 < a.gpu.weights - b.gpu.weights < whole / 2 + 512 * 64  # half, less the block gathered whole
        assert a.gpu.peak - b.gpu.peak == a.gpu.weights - b.gpu.weights


def test_the_planner_leaves_the_engine_as_it_found_it() -> None:
    from dreamvideo_cli import runtime, speed
    from dreamvideo_cli.learn import motion as motion_module

    to, autocast, checkpoint = nn.Module.to, vars(motion_module)["autocast"], vars(speed)["checkpoint"]
    plan = plan_stage(PlanRequest("compose", "tiny-wan"))
    assert [p.name for p in plan.phases] == ["load", "encode prompt", "sampling step", "decode"]
    assert nn.Module.to is to and vars(motion_module)["autocast"] is autocast is runtime.autocast
    assert vars(speed)["checkpoint"] is checkpoint


def test_every_lever_planned_on_tiny_wan() -> None:
    """fp8, block swap and activation offload, each part on the GPU only while it works: the
    swapped block's weights live on the host, and a step copies bytes both ways."""
    settings = Settings(gradient_checkpointing=True, fp8=True, blocks_to_swap=1, offload_activations=True)
    plan = plan_stage(PlanRequest("subject", "tiny-wan", settings=settings))
    names = [p.name for p in plan.phases]
    assert names == ["load", "encode photos", "place denoiser", "textual inversion", "identity adapter"]
    identity = plan.phases[-1]
    assert identity.transfer is not None and identity.transfer.host_to_gpu and identity.transfer.gpu_to_host
    assert identity.host.weights > 0 and plan.phases[0].gpu.peak == 0


def _part_bytes(module: nn.Module, block: int = 1) -> int:
    """The bytes of a module's tensors, each rounded up to `block` (CUDA's allocator: 512)."""
    return sum(-(-t.numel() * t.element_size() // block) * block for t in (*module.parameters(), *module.buffers()))


def test_each_part_is_on_the_gpu_only_while_it_works() -> None:
    """The engine's own placement calls (`memory.placement.use`), seen through the planner: on
    a GPU the parts load to the host; encoding holds the VAE and the appearance encoder (and
    the text encoder for the captions, released after); training holds the denoiser alone."""
    from dreamvideo_cli.plugins import get_backbone

    parts = get_backbone("tiny-wan")(random_weights=True).load("meta", torch.bfloat16)
    modules = (parts.denoiser, parts.vae, parts.text_encoder, parts.appearance_encoder)
    denoiser, vae, text, appearance = (_part_bytes(m) for m in modules)
    on_gpu = dict(zip(("denoiser", "vae", "text", "appearance"), (_part_bytes(m, 512) for m in modules), strict=True))
    phases = {p.name: p for p in plan_stage(PlanRequest("motion", "tiny-wan")).phases}
    assert phases["load"].gpu.weights == 0 and phases["load"].host.weights == denoiser + vae + text + appearance
    encoding = phases["encode clips"].gpu.weights
    assert on_gpu["vae"] + on_gpu["appearance"] <= encoding <= on_gpu["vae"] + on_gpu["appearance"] + on_gpu["text"]
    assert phases["motion adapter"].gpu.weights == on_gpu["denoiser"]
    assert phases["motion adapter"].host.weights == vae + text + appearance
    compose = {p.name: p for p in plan_stage(PlanRequest("compose", "tiny-wan")).phases}
    # The denoiser (and the composed adapters) while sampling, then the VAE comes as it leaves:
    # never both at once.
    sampling = compose["sampling step"].gpu.weights
    assert on_gpu["denoiser"] < sampling < on_gpu["denoiser"] + on_gpu["vae"]
    assert compose["decode"].gpu.weights == on_gpu["vae"]  # the denoiser waits on the host


# -- the command ------------------------------------------------------------------------
def _dv(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from dreamvideo_cli.cli import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dv_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _dv(["plan", "motion", "--backbone", "tiny-wan", "--json"], capsys)
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    assert (data["stage"], data["backbone"], data["fit"]) == ("motion", "tiny-wan", None)
    plan = data["plan"]
    assert plan["frames"] == 9 and plan["gpu_peak"] == max(p["gpu"]["peak"] for p in plan["phases"])
    for phase in plan["phases"]:
        for device in ("gpu", "host"):
            assert set(phase[device]) == {"weights", "trainable", "activations", "cache", "peak"}
    step = plan["phases"][-1]
    assert step["name"] == "motion adapter" and step["gpu"]["trainable"] > 0 and step["per_step"]["flops"] > 0
    assert data["host_available"] > 0  # this machine's, beside the plan's host_peak


def test_dv_plan_says_when_this_machine_has_too_little_host_memory(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dreamvideo_cli.plan import limits

    monkeypatch.setattr(limits, "available_memory", lambda: 1024)
    code, _, err = _dv(["plan", "motion", "--backbone", "tiny", "--frames", "8"], capsys)
    assert code == 0 and "is more than this machine has available (0.0 GiB)" in err


def test_dv_plan_fits_a_tiny_budget(capsys: pytest.CaptureFixture[str]) -> None:
    """A budget below the default settings' peak and above checkpointing's: the search
    stops at checkpointing and prints the command; a budget below the weights fits nothing."""
    peak = plan_stage(PlanRequest("motion", "tiny", frames=8)).gpu_peak
    checkpointed = plan_stage(PlanRequest("motion", "tiny", frames=8, settings=Settings(True))).gpu_peak
    budget = (peak + checkpointed) // 2
    assert checkpointed / 0.95 < budget < peak
    args = ["plan", "motion", "--backbone", "tiny", "--frames", "8", "--gpu-memory", f"{budget}B", "--json"]
    code, out, _ = _dv(args, capsys)
    found = json.loads(out)["fit"]
    assert code == 0 and found["fits"] and found["settings"]["gradient_checkpointing"]
    assert not found["settings"]["fp8"] and found["gpu_peak"] <= budget
    assert found["command"].endswith("--backbone tiny --frames 8 --gradient-checkpointing")
    code, out, _ = _dv([*args[:-2], "1MiB", "--json"], capsys)
    assert not json.loads(out)["fit"]["fits"] and json.loads(out)["fit"]["reason"]
    code, out, _ = _dv(args[:-1], capsys)  # the table
    assert "fits" in out and "run: dv motion learn CLIPS --name NAME --backbone tiny" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "motion", "--backbone", "nope"], "unknown backbone 'nope'"),
        (["plan", "motion", "--backbone", "tiny", "--gpu-memory", "abc"], "--gpu-memory 'abc' is not a size"),
        (["plan", "motion", "--backbone", "tiny", "--shard"], "--shard splits the frozen weights"),
        (["plan", "subject", "--backbone", "tiny", "--frames", "8"], "subject learning works on photos"),
        (["plan", "motion", "--backbone", "wan", "--frames", "32"], "does not fit wan's video VAE"),
    ],
)
def test_dv_plan_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _dv(args, capsys)
    assert code != 0 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_sizes() -> None:
    from dreamvideo_cli.cli._memory_options import parse_size

    assert parse_size("24GiB") == parse_size("24 G") == parse_size("24") == 24 * GiB
    assert parse_size("24GB") == 24 * 10**9 and parse_size("1.5MiB") == 3 * 2**19


def test_fit_options_for_the_learn_commands() -> None:
    """What `--fit` on the learn and compose commands calls: the settings and one line."""
    from dreamvideo_cli.cli._memory_options import fit_options
    from dreamvideo_cli.errors import DVError

    settings, line = fit_options("motion", "10GiB", Settings(gradient_checkpointing=True), backbone="tiny", frames=8)
    assert settings == Settings(gradient_checkpointing=True)  # what was asked, when it fits
    assert line.startswith("--fit 10.0 GiB: --gradient-checkpointing (planned ")
    if not torch.cuda.is_available():
        with pytest.raises(DVError, match="--fit auto needs a CUDA GPU"):
            fit_options("motion", "auto", backbone="tiny")


def test_fit_on_a_learn_command_applies_the_plan_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(photos / f"{i}.png")
    monkeypatch.setenv("DV_HOME", str(tmp_path / "home"))
    args = ["subject", "learn", str(photos), "--name", "fitted", "--backbone", "tiny", "--device", "cpu"]
    code, out, err = _dv([*args, "--embedding-steps", "1", "--adapter-steps", "1", "--fit", "10GiB", "--json"], capsys)
    assert code == 0, err
    assert "--fit 10.0 GiB:" in err and '"ref": "fitted:v1"' in out


def test_a_run_that_trains_one_expert_holds_only_that_one_on_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Motion learning on a two-expert backbone trains the high-noise expert by default: the
    low-noise expert waits on the host while the adapter trains. Sampling brings each expert
    for its own steps (a planned step is the first expert's): the other never comes."""
    from dreamvideo_cli.plan.world import GPU, PlanningWorld
    from dreamvideo_cli.plugins import get_backbone

    parts = get_backbone("tiny-wan2.2-a14b")(random_weights=True).load("meta", torch.bfloat16)
    whole, low = _part_bytes(parts.denoiser, 512), _part_bytes(parts.denoiser.get_submodule("low"), 512)
    phases = {p.name: p for p in plan_stage(PlanRequest("motion", "tiny-wan2.2-a14b")).phases}
    assert 0 < low < whole and phases["motion adapter"].gpu.weights == whole - low
    subject = {p.name: p for p in plan_stage(PlanRequest("subject", "tiny-wan2.2-a14b")).phases}
    assert subject["identity adapter"].gpu.weights == whole  # the identity adapter trains both

    to_gpu: list[str] = []
    move = PlanningWorld.move

    def spy(world: PlanningWorld, module: nn.Module, device: torch.device | None = None, dtype: Any = None) -> None:
        if device == GPU and world.parts is not None:
            to_gpu.extend(n for n in ("high", "low") if module is world.parts.denoiser.get_submodule(n))
        move(world, module, device, dtype)

    monkeypatch.setattr(PlanningWorld, "move", spy)
    plan_stage(PlanRequest("compose", "tiny-wan2.2-a14b"))
    assert to_gpu == ["high"]
