"""`dv subject learn` and `dv motion learn`. The engine (and torch) is imported inside the
commands, after the arguments are checked: `dv --help` and a mistyped count stay instant."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from dreamvideo_cli.cli._help import with_examples
from dreamvideo_cli.cli._memory_options import BLOCKS_TO_SWAP, FIT, FP8, OFFLOAD_ACTIVATIONS, fitted
from dreamvideo_cli.cli._output import out, print_json, warn
from dreamvideo_cli.cli._run_pages import RunPages
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.plan import Settings  # plain data, no torch
from dreamvideo_cli.run_layout import check_step_counts, check_subject_steps

subject_app = typer.Typer(help="Learn a subject from 3-5 photos.", no_args_is_help=True)
motion_app = typer.Typer(help="Learn a motion from one or more clips.", no_args_is_help=True)


def install(app: typer.Typer) -> None:
    app.add_typer(subject_app, name="subject")
    app.add_typer(motion_app, name="motion")


# The help's option groups (dreamvideo_cli.cli._help).
DATA, TRAINING, RUN, DEVICE_GROUP = "Data", "Training", "Checkpoints, previews and resuming", "Device and memory"
NAME_REQUIRED = "Required (not with --resume)."
SUBJECT_EXAMPLES = (
    "dv subject learn ./dog_photos --name dog",
    "dv subject learn ./dog_photos --name dog --init-word dog --masks ./dog_masks --save-every 500",
    "dv subject learn --resume RUN_ID                      # go on after Ctrl-C (see `dv runs list`)",
)
MOTION_EXAMPLES = (
    'dv motion learn ./bear_clips --name bear-walk --phrase "walking"',
    "dv motion learn ./clips --name bear-walk --backbone wan --fit 24GiB",
    "dv motion learn --resume RUN_ID",
)


BACKBONE = typer.Option(
    "modelscope", "--backbone", "-b", help="Backbone name (see `dv backbones`).", rich_help_panel=DEVICE_GROUP
)
BACKBONE_PATH = typer.Option(
    None, "--backbone-path", help="A local diffusers folder of the backbone.", rich_help_panel=DEVICE_GROUP
)
RANDOM_WEIGHTS = typer.Option(
    False,
    "--random-weights",
    help="Full-size architecture with random weights (benchmarks, smoke runs).",
    rich_help_panel=DEVICE_GROUP,
)
SEED = typer.Option(None, "--seed", help="Random seed (recorded in the manifest).", rich_help_panel=TRAINING)
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.", rich_help_panel=DEVICE_GROUP)
SAVE_EVERY = typer.Option(
    500,
    "--save-every",
    help="Keep an adapter checkpoint every K steps as tag NAME:stepK (0: none).",
    rich_help_panel=RUN,
)
RESUME = typer.Option(None, "--resume", help="Continue an interrupted run (its id or folder).", rich_help_panel=RUN)
JSON = typer.Option(False, "--json", help="Print the stored manifest as JSON on stdout.", rich_help_panel=RUN)
DESCRIPTION = typer.Option("", "--description", help="A note stored in the manifest.", rich_help_panel=DATA)
CHECKPOINTING = typer.Option(
    False,
    "--gradient-checkpointing",
    help="Recompute activations in the backward pass: less memory, more compute.",
    rich_help_panel=DEVICE_GROUP,
)
COMPILE = typer.Option(
    False,
    "--compile",
    help="torch.compile the denoiser (CUDA graphs on a GPU): faster steps after a slow start; same math.",
    rich_help_panel=DEVICE_GROUP,
)
PREVIEW_EVERY = typer.Option(
    0,
    "--preview-every",
    min=0,
    help="Every K steps (and at the end) compose a short preview into the run folder's previews/ (0: none).",
    rich_help_panel=RUN,
)
PREVIEW_PROMPT = typer.Option(
    None, "--preview-prompt", help="The previews' prompt (default: the run's own caption).", rich_help_panel=RUN
)
SHARD = typer.Option(
    False,
    "--shard",
    help="Under torchrun or accelerate launch: shard the frozen denoiser's blocks over the processes (FSDP2), "
    "for a backbone one card cannot hold. Without it, several processes learn data parallel.",
    rich_help_panel=DEVICE_GROUP,
)
EXPERTS = typer.Option(
    None,
    "--experts",
    help="On a backbone of several experts (wan2.2-a14b: high,low): the experts that get adapters and whose "
    "timesteps the run trains on (default: the backbone's per kind, docs/method.md).",
    rich_help_panel=TRAINING,
)
FORCE = typer.Option(
    False,
    "--force",
    help="Learn NAME on another backbone than its latest version's, moving NAME:latest there.",
    rich_help_panel=DATA,
)
ADAPTER_WIDTH = typer.Option(
    None,
    "--adapter-width",
    help="The adapters' bottleneck width (default: the backbone's; ModelScope d/2 as in the paper, Wan 128).",
    rich_help_panel=TRAINING,
)


def _learn(learn: Any, folder: Path, name: str, config: Any, resume: str | None, json: bool) -> None:
    """Run `learn_subject` or `learn_motion` with progress on stderr and the run's page kept
    current, then report the stored entry."""
    from dreamvideo_cli.cli._progress import ProgressRenderer
    from dv_registry import Registry

    with ProgressRenderer() as progress:
        pages = RunPages(progress)
        try:
            manifest = learn(folder, name, config, registry=Registry(), on_event=pages, resume=resume)
        except DVError:  # stopped or failed: the page says where the run stands and how to go on
            pages.write()
            raise
    pages.write(stored=[manifest.ref])
    _finish(manifest, json)


def _check_memory(backbone: str, frames: int, settings: Settings, batch_size: int, device: str) -> None:
    """Clips longer than the backbone learns from by default are planned first and refused in
    one line when a step would need more memory than the device has (`plan.limits`)."""
    from dreamvideo_cli.plan.limits import check_device_memory
    from dreamvideo_cli.plugins import get_backbone
    from dreamvideo_cli.runtime import pick_device

    model = get_backbone(backbone)(random_weights=True)
    check_device_memory("motion", model, frames, settings, pick_device(device), batch_size)


def _finish(manifest: Any, json: bool) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # one run over several processes: rank 0 reports it
        return
    if json:
        print_json({"ref": manifest.ref, "digest": manifest.digest} | manifest.model_dump(mode="json"))
        return
    out.print(
        f"stored [bold]{manifest.name}:{manifest.tag}[/bold] ({manifest.kind}, {manifest.parameter_count:,} adapter parameters)"
    )


def _check_inputs(folder: Path | None, name: str | None, resume: str | None, what: str) -> tuple[Path, str]:
    if resume is not None:
        return folder or Path("."), name or ""
    if folder is None or name is None:
        raise DVError(
            f"missing {what} folder or --name",
            f"usage: dv {'subject' if what == 'photos' else 'motion'} learn DIR --name NAME",
        )
    return folder, name


def _check_before_loading(
    kind: str,
    name: str,
    backbone: str,
    random_weights: bool,
    force: bool,
    resume: str | None,
    data: Callable[[], list[str]],
) -> None:
    """Before anything loads: the name and the backbone (one name stays on one backbone:
    refused, or said with --force), then whether the data can teach; warnings are one line
    each (rank 0's, under several processes)."""
    if resume is not None:  # the run's own name, backbone and data, checked when it started
        return
    from dreamvideo_cli.learn_inputs import check_backbone_of_name
    from dv_registry import Registry

    moved = check_backbone_of_name(Registry(), kind, name, backbone, random_weights, force=force)
    warnings = [*([moved] if moved else []), *data()]
    if int(os.environ.get("RANK", "0")) == 0:
        for message in warnings:
            warn(message)


def _check_host_memory(backbone: str, device: str, resume: str | None) -> None:
    """On a GPU every frozen part loads to host memory first: a machine without room for
    them is told before loading (the system would stop the run without a word)."""
    if resume is not None or int(os.environ.get("RANK", "0")) != 0:
        return
    from dreamvideo_cli.runtime import pick_device

    resolved = pick_device(device)
    if resolved.type != "cuda":
        return
    from dreamvideo_cli.plan.limits import host_memory_warning
    from dreamvideo_cli.plugins import get_backbone

    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # each process on this machine loads its own
    line = host_memory_warning(get_backbone(backbone)(random_weights=True), resolved, processes)
    if line is not None:
        warn(line)


@subject_app.command("learn", cls=with_examples(*SUBJECT_EXAMPLES))
def subject_learn(
    photos: Path = typer.Argument(
        None,
        metavar="PHOTOS",
        help="Folder of 3-5 photos of the subject. Required (not with --resume).",
        show_default=False,
    ),
    name: str = typer.Option(
        None,
        "--name",
        "-n",
        metavar="NAME",
        help="Name to store the subject under. " + NAME_REQUIRED,
        rich_help_panel=DATA,
    ),
    init_word: str = typer.Option(
        None, "--init-word", help="A word for the subject's class (default: the name).", rich_help_panel=DATA
    ),
    masks: Path = typer.Option(
        None, "--masks", help="Folder of subject masks named like the photos.", rich_help_panel=DATA
    ),
    embedding_steps: int = typer.Option(
        3000, "--embedding-steps", help="Textual inversion steps.", rich_help_panel=TRAINING
    ),
    adapter_steps: int = typer.Option(
        1000, "--adapter-steps", help="Identity adapter steps.", rich_help_panel=TRAINING
    ),
    batch_size: int = typer.Option(
        4,
        "--batch-size",
        help="Images per step and process; under N processes a step sees N times this "
        "(the paper's 4 on 2 processes: --batch-size 2).",
        rich_help_panel=TRAINING,
    ),
    lr_embedding: float = typer.Option(
        1e-4, "--embedding-lr", help="Learning rate of textual inversion.", rich_help_panel=TRAINING
    ),
    lr_adapter: float = typer.Option(
        1e-5, "--adapter-lr", help="Learning rate of the identity adapter.", rich_help_panel=TRAINING
    ),
    save_every: int = SAVE_EVERY,
    seed: int = SEED,
    backbone: str = BACKBONE,
    backbone_path: str = BACKBONE_PATH,
    random_weights: bool = RANDOM_WEIGHTS,
    device: str = DEVICE,
    gradient_checkpointing: bool = CHECKPOINTING,
    compile: bool = COMPILE,
    shard: bool = SHARD,
    fp8: bool = FP8,
    blocks_to_swap: int = BLOCKS_TO_SWAP,
    offload_activations: bool = OFFLOAD_ACTIVATIONS,
    fit: str = FIT,
    adapter_width: int = ADAPTER_WIDTH,
    experts: str = EXPERTS,
    preview_every: int = PREVIEW_EVERY,
    preview_prompt: str = PREVIEW_PROMPT,
    resume: str = RESUME,
    description: str = DESCRIPTION,
    force: bool = FORCE,
    json: bool = JSON,
) -> None:
    """Textual inversion, then the identity adapter. Paper Section 3.2."""
    check_subject_steps(embedding_steps, adapter_steps)
    check_step_counts(batch_size=batch_size)
    levers = fitted(
        "subject", fit, resume, Settings(gradient_checkpointing, fp8, blocks_to_swap, offload_activations),
        backbone=backbone, batch_size=batch_size, shard=shard,
    )  # fmt: skip
    folder, name = _check_inputs(photos, name, resume, "photos")
    from dreamvideo_cli.learn_inputs import check_subject_data

    _check_before_loading(
        "subject",
        name,
        backbone,
        random_weights,
        force,
        resume,
        lambda: check_subject_data(folder, name, backbone, masks),
    )
    _check_host_memory(backbone, device, resume)
    from dreamvideo_cli.learn import SubjectConfig, learn_subject

    config = SubjectConfig(
        backbone=backbone,
        backbone_path=backbone_path,
        random_weights=random_weights,
        init_word=init_word,
        masks=str(masks) if masks else None,
        embedding_steps=embedding_steps,
        adapter_steps=adapter_steps,
        batch_size=batch_size,
        lr_embedding=lr_embedding,
        lr_adapter=lr_adapter,
        save_every=save_every,
        seed=seed,
        device=device,
        description=description,
        gradient_checkpointing=levers.gradient_checkpointing,
        compile=compile,
        shard=shard,
        fp8=levers.fp8,
        blocks_to_swap=levers.blocks_to_swap,
        offload_activations=levers.offload_activations,
        adapter_width=adapter_width,
        experts=experts,
        preview_every=preview_every,
        preview_prompt=preview_prompt,
    )
    _learn(learn_subject, folder, name, config, resume, json)


@motion_app.command("learn", cls=with_examples(*MOTION_EXAMPLES))
def motion_learn(
    clips: Path = typer.Argument(
        None,
        metavar="CLIPS",
        help="Folder of clips showing the motion. Required (not with --resume).",
        show_default=False,
    ),
    name: str = typer.Option(
        None,
        "--name",
        "-n",
        metavar="NAME",
        help="Name to store the motion under. " + NAME_REQUIRED,
        rich_help_panel=DATA,
    ),
    phrase: str = typer.Option(
        None, "--phrase", help='How prompts name the motion, e.g. "walking" (default: the name).', rich_help_panel=DATA
    ),
    steps: int = typer.Option(1000, "--adapter-steps", help="Motion adapter steps.", rich_help_panel=TRAINING),
    frames: int = typer.Option(
        None,
        "--frames",
        help="Frames per training sample (default: the backbone's; ModelScope 32, Wan 33).",
        rich_help_panel=DATA,
    ),
    fps: int = typer.Option(
        None,
        "--fps",
        help="Frame rate frames are sampled at (default: the backbone's; ModelScope 8, Wan 16).",
        rich_help_panel=DATA,
    ),
    batch_size: int = typer.Option(
        1,
        "--batch-size",
        help="Clip windows per step and process; under N processes a step sees N times this "
        "(the same samples in 1/N of the steps: --adapter-steps divided by N).",
        rich_help_panel=TRAINING,
    ),
    lr: float = typer.Option(
        1e-5, "--adapter-lr", help="Learning rate of the motion adapter.", rich_help_panel=TRAINING
    ),
    text_dropout: float = typer.Option(
        0.5, "--text-dropout", help="Probability of an empty caption.", rich_help_panel=TRAINING
    ),
    image_dropout: float = typer.Option(
        0.1, "--image-dropout", help="Probability of a zero appearance embedding.", rich_help_panel=TRAINING
    ),
    appearance_strength: float = typer.Option(
        1.0, "--appearance-strength", help="lambda, the appearance-guidance strength.", rich_help_panel=TRAINING
    ),
    save_every: int = SAVE_EVERY,
    seed: int = SEED,
    backbone: str = BACKBONE,
    backbone_path: str = BACKBONE_PATH,
    random_weights: bool = RANDOM_WEIGHTS,
    device: str = DEVICE,
    gradient_checkpointing: bool = CHECKPOINTING,
    compile: bool = COMPILE,
    shard: bool = SHARD,
    fp8: bool = FP8,
    blocks_to_swap: int = BLOCKS_TO_SWAP,
    offload_activations: bool = OFFLOAD_ACTIVATIONS,
    fit: str = FIT,
    adapter_width: int = ADAPTER_WIDTH,
    experts: str = EXPERTS,
    preview_every: int = PREVIEW_EVERY,
    preview_prompt: str = PREVIEW_PROMPT,
    resume: str = RESUME,
    description: str = DESCRIPTION,
    force: bool = FORCE,
    json: bool = JSON,
) -> None:
    """The motion adapter with CLIP appearance guidance. Paper Section 3.3."""
    check_step_counts(adapter_steps=steps, batch_size=batch_size, frames=frames, fps=fps)
    levers = fitted(
        "motion", fit, resume, Settings(gradient_checkpointing, fp8, blocks_to_swap, offload_activations),
        backbone=backbone, frames=frames, batch_size=batch_size, shard=shard,
    )  # fmt: skip
    folder, name = _check_inputs(clips, name, resume, "clips")
    from dreamvideo_cli.learn_inputs import check_motion_data

    _check_before_loading(
        "motion",
        name,
        backbone,
        random_weights,
        force,
        resume,
        lambda: check_motion_data(folder, name, backbone, phrase),
    )
    _check_host_memory(backbone, device, resume)
    if frames is not None and resume is None and not shard:
        _check_memory(backbone, frames, levers, batch_size, device)
    from dreamvideo_cli.learn import MotionConfig, learn_motion

    config = MotionConfig(
        backbone=backbone,
        backbone_path=backbone_path,
        random_weights=random_weights,
        phrase=phrase,
        steps=steps,
        frames=frames,
        fps=fps,
        batch_size=batch_size,
        lr=lr,
        text_dropout=text_dropout,
        image_dropout=image_dropout,
        appearance_strength=appearance_strength,
        save_every=save_every,
        seed=seed,
        device=device,
        description=description,
        gradient_checkpointing=levers.gradient_checkpointing,
        compile=compile,
        shard=shard,
        fp8=levers.fp8,
        blocks_to_swap=levers.blocks_to_swap,
        offload_activations=levers.offload_activations,
        adapter_width=adapter_width,
        experts=experts,
        preview_every=preview_every,
        preview_prompt=preview_prompt,
    )
    _learn(learn_motion, folder, name, config, resume, json)
