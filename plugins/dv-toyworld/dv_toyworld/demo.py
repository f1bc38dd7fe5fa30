"""`dv demo`: DreamVideo end to end on the toy world, offline, in about two minutes on a CPU.

1. Render 4 photos of a held-out object (a shape the backbone never saw) and 3 clips of a
   held-out motion performed by *other* objects.
2. `learn_subject` and `learn_motion` on them through the engine, into the user's registry
   (`$DV_HOME`) as `toy-<object>` and `toy-<motion>`, like any other subject and motion.
3. `compose` them on a scene; sample the backbone alone (no adapters) with the best plain
   text description of the same video, same seed and sampler.
4. Score both with the toy world's exact metrics; write videos, a contact sheet and a
   metrics table.

The step counts and learning rates are the demo's own (a few hundred steps at high
learning rates), not the paper's: the point is a result within minutes on a CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dreamvideo_cli.events import EventHandler, Note, ignore_events
from dv_toyworld import data, world


@dataclass
class DemoConfig:
    subject: world.Obj = field(default_factory=lambda: world.Obj("star", "pink", "big", "plain"))
    motion: world.Motion = field(default_factory=lambda: world.Motion("circles", "quickly"))
    performers: tuple[world.Obj, ...] = (
        world.Obj("square", "blue", "big"),
        world.Obj("circle", "green", "big"),
        world.Obj("triangle", "yellow", "big"),
    )
    clip_scenes: tuple[str, ...] = ("sky", "sand", "night")
    scene: str = "snow"
    photos: int = 4
    embedding_steps: int = 150
    adapter_steps: int = 150
    motion_steps: int = 200
    sample_steps: int = 25
    lr_embedding: float = 5e-3
    lr_adapter: float = 1e-3
    lr_motion: float = 1e-3
    guidance: float = 5.0
    seed: int = 0
    device: str = "cpu"
    backbone_path: str | None = None  # another toyworld weights file
    random_weights: bool = False  # for tests of the plumbing only

    def quick(self) -> DemoConfig:
        """A few steps of everything: for tests of the plumbing, not of quality."""
        return replace(self, embedding_steps=3, adapter_steps=3, motion_steps=3, sample_steps=3)

    @property
    def subject_name(self) -> str:
        return f"toy-{self.subject.slug}"

    @property
    def motion_name(self) -> str:
        return f"toy-{self.motion.slug}"


@dataclass
class DemoResult:
    video: Path
    backbone_only_video: Path
    contact_sheet: Path
    table: Path
    prompt: str
    backbone_only_prompt: str
    metrics: dict[str, dict[str, float]]
    seconds: float
    subject: str
    motion: str

    def as_json(self) -> dict[str, Any]:
        return {
            "video": str(self.video),
            "backbone_only_video": str(self.backbone_only_video),
            "contact_sheet": str(self.contact_sheet),
            "table": str(self.table),
            "prompt": self.prompt,
            "backbone_only_prompt": self.backbone_only_prompt,
            "subject": self.subject,
            "motion": self.motion,
            "seconds": round(self.seconds, 1),
            "metrics": self.metrics,
        }


def describe(obj: world.Obj, motion: world.Motion, scene: str) -> str:
    """The best a user can do with words alone (the words for held-out things exist, but
    the backbone never learnt what they look like)."""
    return world.Clip(obj, motion, scene, (0.0, 0.0)).caption()


def backbone_only(
    prompt: str, frames: int, config: DemoConfig, on_event: EventHandler = ignore_events
) -> world.UInt8Array:
    """The frozen backbone with no adapters, sampled exactly as compose samples."""
    from dreamvideo_cli.compose import sample_video
    from dreamvideo_cli.plugins import get_sampler
    from dv_toyworld.backbone import ToyWorldBackbone

    backbone = ToyWorldBackbone(path=config.backbone_path, random_weights=config.random_weights)
    parts = backbone.load(config.device)
    fmt = backbone.video_format
    video: world.UInt8Array = sample_video(
        parts, prompt, "", frames, fmt.height, fmt.width, config.sample_steps, config.guidance,
        get_sampler("ddim"), config.seed, 0.0, on_event,
    )
    return video


def _upscale(frames: np.ndarray, factor: int = 3) -> np.ndarray:
    return np.asarray(frames.repeat(factor, axis=-3).repeat(factor, axis=-2))


def contact_sheet(rows: list[tuple[str, np.ndarray]]) -> Any:
    """One labelled strip per row (photos, a training clip, the results), stacked."""
    from PIL import Image

    from dreamvideo_cli import media

    strips = [media.contact_sheet(_upscale(frames), columns=8, max_frames=8, label=label) for label, frames in rows]
    width = max(s.width for s in strips)
    sheet = Image.new("RGB", (width, sum(s.height for s in strips) + 6 * len(strips)), (255, 255, 255))
    y = 0
    for strip in strips:
        sheet.paste(strip, (0, y))
        y += strip.height + 6
    return sheet


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(metrics.values())))
    lines = ["| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for row, values in metrics.items():
        lines.append(f"| {row} | " + " | ".join(f"{values[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def evaluate(video: np.ndarray, prompt: str, config: DemoConfig, photos: list[np.ndarray]) -> dict[str, float]:
    from dreamvideo_cli.metrics import EvalSample
    from dv_toyworld.metrics import score_all

    sample = EvalSample(
        frames=video,
        prompt=prompt,
        reference_images=photos,
        extras={"toy_object": asdict(config.subject), "toy_motion": asdict(config.motion)},
    )
    return score_all(sample)


def run_demo(out: Path, config: DemoConfig, registry: Any, on_event: EventHandler = ignore_events) -> DemoResult:
    """Everything `dv demo` does; returns where it wrote what and the metrics."""
    from dreamvideo_cli import media
    from dreamvideo_cli.compose import ComposeConfig, compose
    from dreamvideo_cli.learn import MotionConfig, SubjectConfig, learn_motion, learn_subject

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    photo_paths = data.write_photos(out / "photos", config.subject, config.photos, config.seed)
    clips = data.motion_clips(config.motion, list(config.performers), list(config.clip_scenes), config.seed + 1)
    data.write_clips(out / "clips", clips)
    on_event(Note(f"wrote {len(photo_paths)} photos of a {config.subject.words()} and {len(clips)} clips of "
                  f"{config.motion.words()!r} by other objects under {out}"))

    subject = learn_subject(
        out / "photos",
        config.subject_name,
        SubjectConfig(
            backbone="toyworld", backbone_path=config.backbone_path, random_weights=config.random_weights,
            init_word=world.GENERIC_SHAPE, embedding_steps=config.embedding_steps, adapter_steps=config.adapter_steps,
            batch_size=4, lr_embedding=config.lr_embedding, lr_adapter=config.lr_adapter, warmup_steps=10,
            save_every=0, log_every=25, seed=config.seed, device=config.device,
            description=f"dv demo: photos of a {config.subject.words()} (a held-out shape)",
        ),
        registry=registry, on_event=on_event,
    )
    motion = learn_motion(
        out / "clips",
        config.motion_name,
        MotionConfig(
            backbone="toyworld", backbone_path=config.backbone_path, random_weights=config.random_weights,
            phrase=config.motion.words(), steps=config.motion_steps, frames=world.FRAMES, fps=world.FPS,
            batch_size=1, lr=config.lr_motion, warmup_steps=10, save_every=0, log_every=25,
            seed=config.seed, device=config.device,
            description=f"dv demo: {config.motion.words()} (a held-out motion) by other objects",
        ),
        registry=registry, on_event=on_event,
    )
    subject_ref, motion_ref = f"{subject.name}:{subject.tag}", f"{motion.name}:{motion.tag}"
    composed = compose(
        subject_ref, motion_ref, f"on {config.scene}", out / "dreamvideo.mp4",
        ComposeConfig(steps=config.sample_steps, guidance=config.guidance, seed=config.seed, sampler="ddim",
                      gif=True, device=config.device, backbone_path=config.backbone_path),
        registry=registry, on_event=on_event,
    )
    plain_prompt = describe(config.subject, config.motion, config.scene)
    on_event(Note(f"backbone alone: {plain_prompt}"))
    alone = backbone_only(plain_prompt, world.FRAMES, config, on_event)
    alone_path = media.write_video(out / "backbone_only.mp4", alone, world.FPS, {"prompt": plain_prompt, "seed": config.seed})

    # Score what compose made from its GIF: the mp4's 4:2:0 chroma would blur 32x32 colours.
    assert composed.gif is not None
    dreamvideo_frames = np.asarray(media.read_frames(composed.gif, None))
    photos = [np.asarray(media.load_photo(p)) for p in photo_paths]
    metrics = {
        "dreamvideo": evaluate(dreamvideo_frames, plain_prompt, config, photos),
        "backbone_only": evaluate(alone, plain_prompt, config, photos),
    }
    sheet = contact_sheet([
        (f"subject photos: a {config.subject.words()} (never seen in pretraining)", np.stack(photos)),
        (f"motion clip: {clips[0].caption()}", clips[0].render()),
        (f"dreamvideo: {composed.prompt}", dreamvideo_frames),
        (f"backbone alone: {plain_prompt}", alone),
    ])
    sheet_path = media.save_png(sheet, out / "demo.png")
    table = metrics_table(metrics)
    table_path = out / "metrics.md"
    table_path.write_text(f"# dv demo\n\nprompt: `{composed.prompt}`  \nbackbone alone: `{plain_prompt}`\n\n{table}")
    result = DemoResult(
        video=composed.video, backbone_only_video=alone_path, contact_sheet=sheet_path, table=table_path,
        prompt=composed.prompt, backbone_only_prompt=plain_prompt, metrics=metrics,
        seconds=time.monotonic() - started, subject=subject_ref, motion=motion_ref,
    )
    (out / "metrics.json").write_text(json.dumps(result.as_json(), indent=2) + "\n")
    return result
