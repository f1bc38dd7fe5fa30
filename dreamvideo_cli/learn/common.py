"""What subject and motion learning share: the training loss, the optimizer, runs on disk,
the training stage loop, stopping cleanly, and saving/restoring training state
(safetensors + JSON, never pickle)."""

from __future__ import annotations

import json
import secrets
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from dreamvideo_cli.backbone import AdapterSite, Backbone, Components, Fingerprint
from dreamvideo_cli.errors import DVError, Interrupted
from dreamvideo_cli.events import CheckpointSaved, EventHandler, Note, StepDone

# These moved to learn/optim.py and learn/run_folder.py; they stay importable from here.
from dreamvideo_cli.learn.optim import AdamWWithWarmup as AdamWWithWarmup
from dreamvideo_cli.learn.optim import optimizer_state as optimizer_state
from dreamvideo_cli.learn.optim import restore_optimizer as restore_optimizer
from dreamvideo_cli.learn.run_folder import Run as Run
from dreamvideo_cli.learn.run_folder import atomic_write_json as atomic_write_json
from dreamvideo_cli.learn.run_folder import load_tensors as load_tensors
from dreamvideo_cli.learn.run_folder import runs_home as runs_home
from dreamvideo_cli.learn.run_folder import save_tensors as save_tensors
from dreamvideo_cli.learn.run_folder import tensors_to_bytes as tensors_to_bytes

# The runtime moved to a public module; these names stay importable from here.
from dreamvideo_cli.runtime import (  # noqa: F401
    autocast,
    encode_text,
    frozen_dtype,
    pick_device,
    quiet_libraries,
    to_tensor_images,
    tokenize,
)


def open_backbone(config: Any) -> tuple[Backbone, Fingerprint]:
    """The backbone a learn config names, and its fingerprint: this fails now, before a run
    folder exists, when the weights are missing."""
    from dreamvideo_cli.plugins import get_backbone

    backbone = get_backbone(config.backbone)(path=config.backbone_path, random_weights=config.random_weights)
    return backbone, backbone.fingerprint()


def begin_run(
    registry_home: Path,
    kind: str,
    name: str,
    config: Any,
    inputs: str | Path,
    resumed: Run | None,
    on_event: EventHandler,
) -> Run:
    """A new run folder (its seed drawn now and recorded), or the resumed one; seeds torch."""
    if resumed is None:
        config.seed = seed_everything(config.seed)
        run = Run.create(registry_home, kind, name, config, inputs)
    else:
        seed_everything(config.seed)
        run = resumed
    on_event(Note(f"run {run.id} in {run.folder}"))
    return run


def load_for_training(
    backbone: Backbone, fingerprint: Fingerprint, device_name: str, on_event: EventHandler
) -> tuple[Components, list[AdapterSite]]:
    """Every frozen part on the run's device, prepared, and the adapter sites."""
    device = pick_device(device_name)
    on_event(Note(f"loading backbone {fingerprint.describe()} on {device}"))
    parts = backbone.load(device, frozen_dtype(device))
    prepare_denoiser(parts)
    return parts, backbone.adapter_sites(parts.denoiser)


def prepare_denoiser(parts: Components) -> None:
    """Engine-wide measures of the denoiser's family that change no result."""
    parts.family.prepare(parts.denoiser, parts.device)


prepare_unet = prepare_denoiser  # the name it had when every denoiser was a UNet


def diffusion_loss(
    parts: Components,
    x0: torch.Tensor,
    context: torch.Tensor,
    generator: torch.Generator,
    offset_noise: float,
    mask: torch.Tensor | None = None,
    model: nn.Module | None = None,
) -> torch.Tensor:
    """The backbone's training loss on clean latents x0 [B, C, F', h, w] (DDPM epsilon or
    v, or rectified flow: `parts.objective`), optionally multiplied by a 0/1 mask
    [B, 1 or C, F', h, w] as the authors do for subjects. `model` is the denoiser or a
    compiled wrapper of it."""
    objective = parts.objective
    b, c = x0.shape[:2]
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    if offset_noise:
        # One offset per video and channel, shared by every frame and position.
        noise = noise + offset_noise * torch.randn((b, c, 1, 1, 1), generator=generator, device=x0.device)
    t = objective.sample_timesteps(b, generator, x0.device)
    xt = objective.add_noise(x0, noise, t)
    pred = parts.denoise(xt.to(parts.dtype), objective.model_timestep(t), context, model)
    se = (pred.float() - objective.target(x0, noise, t).float()) ** 2
    if mask is not None:
        se = se * mask
    return se.mean()


class StopRequested:
    """Turns Ctrl-C and SIGTERM into a flag the training loop checks between steps, so it
    can save its state and exit cleanly instead of dying mid-write."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    @contextmanager
    def installed(self) -> Iterator[StopRequested]:
        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no signal handling, nothing to restore
            previous = {}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def seed_everything(seed: int | None) -> int:
    if seed is None:
        seed = secrets.randbelow(2**31)
    torch.manual_seed(seed)
    return seed


def generator_for(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def png_bytes(image: Any) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def report_progress(
    on_event: EventHandler,
    run: Run,
    stage: str,
    step: int,
    total: int,
    pending: list[torch.Tensor],
    log_every: int,
    lr: float,
) -> None:
    """Emit progress; read losses back from the device only every `log_every` steps, so the
    loop does not wait on the GPU at each step."""
    if step % max(1, log_every) == 0 or step == total:
        values = torch.stack(pending).float().cpu().tolist()
        run.log_losses(stage, step - len(values) + 1, values)
        pending.clear()
        on_event(StepDone(stage, step, total, loss=values[-1], lr=lr))
    else:
        on_event(StepDone(stage, step, total))


def interrupted(run: Run, stage: str, step: int) -> Interrupted:
    return Interrupted(
        f"stopped during {stage} at step {step}; state saved in run {run.id}",
        f"continue with --resume {run.id}",
    )


def checkpoint_path(run: Run, step: int) -> Path:
    return run.folder / "checkpoints" / f"adapter-step{step}.safetensors"


def maybe_save_checkpoint(
    run: Run, stage: str, step: int, total: int, every: int, adapters: Any, saved: list[int], on_event: EventHandler
) -> None:
    """Every `every` steps (not at the last, which becomes the version itself) keep the
    adapter; these become the registry tags `name:stepK`."""
    if every and step % every == 0 and step < total:
        save_tensors(checkpoint_path(run, step), adapters.adapter_state_dict())
        saved.append(step)
        on_event(CheckpointSaved(stage, step, str(run.folder)))


# Settings a resumed run may change: how it runs, not what it learns.
RESUMABLE_SETTINGS = frozenset(
    {
        "device",
        "log_every",
        "save_every",
        "compile",
        "gradient_checkpointing",
        "description",
        "preview_every",
        "preview_prompt",
    }
)
# Step totals per stage: a resumed run may lengthen or shorten a stage it has not passed.
STAGE_TOTALS = {"embedding_steps": "embedding", "adapter_steps": "identity", "steps": "motion"}


def resumed_config(
    registry_home: Path,
    resume: str,
    kind: str,
    config_type: type[Any],
    requested: Any,
    on_event: EventHandler | None = None,
) -> tuple[Run, Any, str, Path]:
    """Open a run to resume: its saved config, name and inputs.

    `requested` is the config the user asked for now (or just a device name). A setting
    the user changed from its default is applied if it only changes how the run goes on
    (the device, logging, checkpoints, a later end of a stage not yet passed), and said so;
    any other change (a learning rate, a batch size, the frames) is refused in one line,
    since the saved state was made with the old value."""
    run = Run.open(registry_home, resume)
    saved = run.config()
    if saved["kind"] != kind:
        raise DVError(f"run {resume!r} is a {saved['kind']} run", f"resume it with `dv {saved['kind']} learn`")
    values = dict(saved["config"])
    if isinstance(requested, str):
        values["device"] = requested
        return run, config_type(**values), saved["name"], Path(saved["inputs"])
    state = json.loads((run.folder / "checkpoints" / "state.json").read_text())
    defaults = config_type()
    applied = []
    for name, value in asdict(requested).items():
        if name not in values or value == values[name] or value == getattr(defaults, name):
            continue
        stage = STAGE_TOTALS.get(name)
        if name in RESUMABLE_SETTINGS or (stage is not None and _can_retotal(state, stage, value)):
            applied.append(f"{name} {values[name]} -> {value}")
            values[name] = value
        elif stage is not None:
            raise DVError(
                f"run {run.id} is past step {value} of {stage}",
                f"resume with --{name.replace('_', '-')} above {state['step']}, or start a new run",
            )
        else:
            raise DVError(
                f"run {run.id} was started with {name} = {values[name]!r}, and a resumed run keeps what it learns with",
                f"resume without --{name.replace('_', '-')}, or start a new run",
            )
    values["device"] = requested.device
    if applied and on_event is not None:
        on_event(Note(f"resuming with {', '.join(applied)}"))
    return run, config_type(**values), saved["name"], Path(saved["inputs"])


def _can_retotal(state: dict[str, Any], stage: str, total: int) -> bool:
    """A stage's total may change while that stage (or an earlier one) is where the run is."""
    order = ["embedding", "identity", "done"] if stage in ("embedding", "identity") else ["motion", "done"]
    at = state["stage"] if state["stage"] in order else order[-1]
    if order.index(at) < order.index(stage):
        return True
    return at == stage and total > int(state["step"])


def run_stage(
    *,
    run: Run,
    stage: str,
    step: int,
    total: int,
    optimizer: AdamWWithWarmup,
    loss_fn: Callable[[], torch.Tensor],
    stop: StopRequested,
    save_state: Callable[[int], None],
    on_event: EventHandler,
    log_every: int,
    checkpoints: list[int] | None = None,
    save_every: int = 0,
    adapters: Any = None,
    after_step: Callable[[int], None] | None = None,
) -> int:
    """One training stage from `step` to `total`: a loss, an optimizer step, progress; the
    adapter kept every `save_every` steps; on Ctrl-C or SIGTERM the state is saved and the
    run stops with a resumable error. Returns the last step."""
    pending: list[torch.Tensor] = []
    while step < total:
        if stop:
            save_state(step)
            raise interrupted(run, stage, step)
        loss = loss_fn()
        optimizer.step(loss)
        step += 1
        pending.append(loss.detach())
        report_progress(on_event, run, stage, step, total, pending, log_every, optimizer.lr)
        if adapters is not None and checkpoints is not None:
            maybe_save_checkpoint(run, stage, step, total, save_every, adapters, checkpoints, on_event)
        if after_step is not None:
            after_step(step)
    return step


PREVIEW_STEPS = 10  # sampling steps of a preview: enough to see what is being learnt
PREVIEW_SEED = 0


def write_preview(
    parts: Components,
    backbone: Backbone,
    run: Run,
    name: str,
    prompt: str,
    frames: int,
    on_event: EventHandler,
    release_text: bool = True,
) -> Path:
    """Compose a short video with the adapters as they stand (attached by the caller) and
    keep its contact sheet as `previews/<name>.png` in the run folder. It draws its noise
    from its own generator and runs without gradients, so training is unchanged by it."""
    from dreamvideo_cli import media
    from dreamvideo_cli.compose import sample_video
    from dreamvideo_cli.plugins import get_sampler

    fmt, defaults = backbone.video_format, backbone.sampling
    sampler = get_sampler(defaults.sampler)
    video = sample_video(
        parts,
        prompt,
        "",
        frames,
        fmt.height,
        fmt.width,
        PREVIEW_STEPS,
        defaults.guidance,
        sampler,
        PREVIEW_SEED,
        release_text=release_text,
    )
    path = run.folder / "previews" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    media.save_png(media.contact_sheet(video, columns=8, max_frames=16, label=f"{name}: {prompt}"), path)
    on_event(Note(f"preview: {path}"))
    return path


def preview_due(every: int, step: int, total: int) -> bool:
    return bool(every) and (step % every == 0 or step == total)
