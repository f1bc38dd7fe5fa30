"""`dv demo`: DreamVideo end to end on the toy world, offline, in about two minutes on a 2-core CPU.

1. Render 4 photos of a held-out object (in a colour the backbone can draw but no word
   names, never shown in pretraining) and 6 clips of a held-out motion performed by
   *other* objects.
2. `learn_subject` and `learn_motion` on them through the engine, side by side (a process
   each on a CPU with two cores or more), into the user's registry (`$DV_HOME`) as
   `toy-<object>` and `toy-<motion>`, like any other subject and motion.
3. `compose` them on a scene in no photo and no clip; sample the backbone alone (no
   adapters) with the best plain text description of the same video, same seed and sampler.
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
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamvideo_cli.events import EventHandler, Note, ignore_events
from dv_toyworld import data, world

if TYPE_CHECKING:
    from dreamvideo_cli import ComposeConfig, MotionConfig, SubjectConfig


@dataclass
class DemoConfig:
    subject: world.Obj = field(default_factory=lambda: world.Obj("circle", "teal", "big", "plain"))
    motion: world.Motion = field(default_factory=lambda: world.Motion("circles", "quickly"))
    # Six performers in six colours: with three, the motion adapter took on their average
    # colour and tinted the subject with it (docs/toyworld.md).
    performers: tuple[world.Obj, ...] = (
        world.Obj("square", "blue", "big"),
        world.Obj("circle", "green", "big"),
        world.Obj("triangle", "yellow", "big"),
        world.Obj("diamond", "red", "big"),
        world.Obj("cross", "purple", "big"),
        world.Obj("circle", "orange", "big"),
    )
    # The performers' scenes; never `scene`, so the composed video's background comes from
    # the prompt, not from a clip.
    clip_scenes: tuple[str, ...] = ("sky", "sand", "night", "grass", "snow", "waves")
    # A scene in no clip and no photo. Not snow: the toy backbone pulls an object's colour
    # towards a bright background, so a teal subject came out pale cyan on snow and the
    # subject's colour hardly showed (docs/toyworld.md has the measurements by scene).
    scene: str = "tiles"
    photos: int = 4
    masks: bool = True  # subject masks (dv's --masks): the photos' backgrounds are not the subject
    embedding_steps: int = 300
    adapter_steps: int = 100
    motion_steps: int = 500
    sample_steps: int = 25
    # Twice the paper's textual-inversion rate for a tenth of its steps. A much faster one
    # (1e-3) drives the token far beyond a word's norm: it still draws the subject alone,
    # but "a <token> on snow" then draws neither the subject nor the snow; at 1e-4 the
    # token hardly leaves its init word (docs/toyworld.md has the measurements).
    lr_embedding: float = 2e-4
    lr_adapter: float = 3e-4
    lr_motion: float = 3e-3
    # p_image_zero of motion learning, the top of the authors' 0-0.5: half the steps learn
    # the motion with no appearance condition, which is how the demo composes it.
    image_dropout: float = 0.5
    guidance: float = 5.0
    motion_scale: float = 1.0  # compose's --motion-scale
    # compose's lambda. The motion adapter learns with appearance guidance (lambda = 1), but
    # the demo composes with lambda = 0: the toy appearance embedding of a subject photo is
    # far from the three embeddings the condition layer saw in training, and its linear
    # extrapolation paints stripes and the clips' colours over the subject (docs/toyworld.md).
    appearance_strength: float = 0.0
    seed: int = 0
    seeds: int = 4  # videos per row, scored and averaged (one sample is a noisy measurement)
    # Learn the motion in a second process while the subject learns (CPU, two cores or more).
    side_by_side: bool = True
    device: str = "cpu"
    backbone_path: str | None = None  # another toyworld weights file
    random_weights: bool = False  # for tests of the plumbing only

    def compose_command(self, subject: str, motion: str, prompt: str) -> str:
        """The `dv compose` command that makes what the demo made: its sampling settings,
        not compose's defaults (guidance 9 and appearance guidance wreck the toy world)."""
        flags = f"--sample-steps {self.sample_steps} --guidance {self.guidance:g} --appearance-strength {self.appearance_strength:g}"
        if self.motion_scale != 1.0:
            flags += f" --motion-scale {self.motion_scale:g}"
        return f'dv compose {subject} {motion} "{prompt}" {flags} --seed {self.seed}'

    def quick(self) -> DemoConfig:
        """A few steps of everything: for tests of the plumbing, not of quality."""
        return replace(self, embedding_steps=3, adapter_steps=3, motion_steps=3, sample_steps=3, seeds=2)

    def subject_config(self, masks: Path | None, **changes: Any) -> SubjectConfig:
        """How the demo (and the ablation) learns a subject; `changes` override fields."""
        from dreamvideo_cli import SubjectConfig

        fields: dict[str, Any] = dict(
            **self._learning_fields(),
            init_word=world.GENERIC_SHAPE,
            masks=str(masks) if masks else None,
            embedding_steps=self.embedding_steps,
            adapter_steps=self.adapter_steps,
            batch_size=4,
            lr_embedding=self.lr_embedding,
            lr_adapter=self.lr_adapter,
        )
        return SubjectConfig(**{**fields, **changes})

    def motion_config(self, motion: world.Motion, **changes: Any) -> MotionConfig:
        """How the demo (and the ablation) learns `motion`; `changes` override fields."""
        from dreamvideo_cli import MotionConfig

        fields: dict[str, Any] = dict(
            **self._learning_fields(),
            phrase=motion.words(),
            steps=self.motion_steps,
            frames=world.FRAMES,
            fps=world.FPS,
            batch_size=1,
            lr=self.lr_motion,
            image_dropout=self.image_dropout,
        )
        return MotionConfig(**{**fields, **changes})

    def compose_config(self, **changes: Any) -> ComposeConfig:
        """How the demo (and the ablation) composes; `changes` override fields."""
        from dreamvideo_cli import ComposeConfig

        fields: dict[str, Any] = dict(
            steps=self.sample_steps,
            guidance=self.guidance,
            seed=self.seed,
            sampler="ddim",
            motion_scale=self.motion_scale,
            appearance_strength=self.appearance_strength,
            device=self.device,
            backbone_path=self.backbone_path,
        )
        return ComposeConfig(**{**fields, **changes})

    def _learning_fields(self) -> dict[str, Any]:
        """What subject and motion learning share: the backbone, the run settings."""
        return dict(
            backbone="toyworld",
            backbone_path=self.backbone_path,
            random_weights=self.random_weights,
            warmup_steps=10,
            save_every=0,
            seed=self.seed,
            device=self.device,
        )

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
    metrics: dict[str, dict[str, float]]  # row -> metric -> mean over the seeds
    errors: dict[str, dict[str, float | None]]  # row -> metric -> its standard error (None for one seed)
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
            "metrics": {
                row: {**means, **{f"{k}_se": self.errors[row][k] for k in means}} for row, means in self.metrics.items()
            },
        }


def _held_out_note(obj: world.Obj, seen: bool = False) -> str:
    """What labels say about a subject in a held-out colour; nothing for a vocabulary one."""
    if obj.colour not in world.HELD_OUT_COLOURS:
        return ""
    return " (a colour no word names; never seen in pretraining)" if seen else " (a colour no word names)"


def _seen_words(obj: world.Obj) -> str:
    """The object as the photos show it (`big teal circle`), not as a caption can word it
    (`big green circle`: the nearest word the toy vocabulary has)."""
    texture = "" if obj.texture == "plain" else f" {obj.texture}"
    return f"{obj.size} {obj.colour}{texture} {obj.shape}"


def describe(obj: world.Obj, motion: world.Motion, scene: str) -> str:
    """The best a user can do with words alone: the vocabulary's nearest colour word, and
    the words for held-out shapes and motions (which exist, but the backbone never learnt
    what they look like)."""
    return world.Clip(obj, motion, scene, (0.0, 0.0)).caption()


def backbone_only(
    prompt: str, frames: int, config: DemoConfig, on_event: EventHandler = ignore_events
) -> world.UInt8Array:
    """The frozen backbone with no adapters, sampled exactly as compose samples."""
    from dreamvideo_cli import VideoRequest, get_sampler, sample_video
    from dv_toyworld.backbone import ToyWorldBackbone

    backbone = ToyWorldBackbone(path=config.backbone_path, random_weights=config.random_weights)
    parts = backbone.load(config.device)
    fmt = backbone.video_format
    request = VideoRequest(
        prompt, frames, fmt.height, fmt.width, config.sample_steps, config.guidance, get_sampler("ddim"), config.seed
    )
    video: world.UInt8Array = sample_video(parts, request, on_event=on_event)
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


def metrics_table(
    metrics: dict[str, dict[str, float]], errors: dict[str, dict[str, float | None]] | None = None
) -> str:
    """A markdown table, one row per entry; `errors` adds ± its value where it has one."""
    keys = list(next(iter(metrics.values())))

    def cell(row: str, key: str) -> str:
        error = errors.get(row, {}).get(key) if errors else None
        return f"{metrics[row][key]:.3f}" if error is None else f"{metrics[row][key]:.3f} ± {error:.3f}"

    lines = ["| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for row in metrics:
        lines.append(f"| {row} | " + " | ".join(cell(row, k) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def standard_error(values: list[float]) -> float | None:
    """Of the mean (None for one value): single videos differ a lot (motion fidelity from
    -0.7 to 0.9), so a mean is only worth reading with it."""
    return round(float(np.std(values, ddof=1) / np.sqrt(len(values))), 4) if len(values) > 1 else None


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
    from dreamvideo_cli import compose, learn_motion, learn_subject, media

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    masks = out / "masks" if config.masks else None
    photo_paths = data.write_photos(out / "photos", config.subject, config.photos, config.seed, masks=masks)
    clips = data.motion_clips(config.motion, list(config.performers), list(config.clip_scenes), config.seed + 1)
    data.write_clips(out / "clips", clips)
    on_event(
        Note(
            f"wrote {len(photo_paths)} photos of a {_seen_words(config.subject)}{_held_out_note(config.subject)} and "
            f"{len(clips)} clips of "
            f"{config.motion.words()!r} by other objects under {out}"
        )
    )

    subject_config = config.subject_config(
        masks,
        log_every=25,
        description=f"dv demo: photos of a {config.subject.colour} {config.subject.shape}{_held_out_note(config.subject)}",
    )
    motion_config = config.motion_config(
        config.motion,
        log_every=25,
        description=f"dv demo: {config.motion.words()} (a held-out motion) by other objects",
    )
    plain_prompt = describe(config.subject, config.motion, config.scene)
    seeds = range(config.seed, config.seed + config.seeds)

    def sample_backbone_alone(handler: EventHandler) -> list[world.UInt8Array]:
        handler(Note(f"backbone alone: {plain_prompt}"))
        return [backbone_only(plain_prompt, world.FRAMES, replace(config, seed=seed), handler) for seed in seeds]

    if config.side_by_side and config.device == "cpu" and available_cores() >= 2:
        import torch

        from dv_toyworld.motion_process import MotionProcess

        threads = torch.get_num_threads()
        with MotionProcess(out / "clips", config.motion_name, motion_config, registry.home, threads) as motion_run:
            handler = motion_run.forward(on_event)
            subject = learn_subject(
                out / "photos", config.subject_name, subject_config, registry=registry, on_event=handler
            )
            # The backbone alone needs no adapters: sample it while the motion is still learning.
            alone_videos = sample_backbone_alone(handler)
            motion_ref = motion_run.result(on_event)
    else:
        subject = learn_subject(
            out / "photos", config.subject_name, subject_config, registry=registry, on_event=on_event
        )
        motion = learn_motion(out / "clips", config.motion_name, motion_config, registry=registry, on_event=on_event)
        motion_ref = f"{motion.name}:{motion.tag}"
        alone_videos = sample_backbone_alone(on_event)
    subject_ref = f"{subject.name}:{subject.tag}"
    photos = [np.asarray(media.load_photo(p)) for p in photo_paths]
    scores: dict[str, list[dict[str, float]]] = {"dreamvideo": [], "backbone_only": []}
    made = []  # per seed: (compose result, its frames, backbone-alone frames, their file)
    for i, (seed, alone) in enumerate(zip(seeds, alone_videos, strict=True)):
        folder = out if i == 0 else out / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        composed = compose(
            subject_ref,
            motion_ref,
            f"on {config.scene}",
            folder / "dreamvideo.mp4",
            config.compose_config(seed=seed, gif=True),
            registry=registry,
            on_event=on_event,
        )
        alone_path = media.write_video(
            folder / "backbone_only.mp4", alone, world.FPS, {"prompt": plain_prompt, "seed": seed}
        )
        # Score what compose made from its GIF: the mp4's 4:2:0 chroma would blur 32x32 colours.
        assert composed.gif is not None
        frames = np.asarray(media.read_frames(composed.gif, None))
        scores["dreamvideo"].append(evaluate(frames, plain_prompt, config, photos))
        scores["backbone_only"].append(evaluate(alone, plain_prompt, config, photos))
        made.append((composed, frames, alone, alone_path))
    metrics = {
        row: {k: round(float(np.mean([s[k] for s in runs])), 4) for k in runs[0]} for row, runs in scores.items()
    }
    errors = {row: {k: standard_error([s[k] for s in runs]) for k in runs[0]} for row, runs in scores.items()}
    composed, dreamvideo_frames, alone, alone_path = made[0]  # the first seed's videos are the ones shown
    sheet = contact_sheet(
        [
            (
                f"subject photos: a {config.subject.colour} {config.subject.shape}{_held_out_note(config.subject, seen=True)}",
                np.stack(photos),
            ),
            (f"motion clip: {clips[0].caption()}", clips[0].render()),
            (f"dreamvideo: {composed.prompt}", dreamvideo_frames),
            (f"backbone alone: {plain_prompt}", alone),
        ]
    )
    sheet_path = media.save_png(sheet, out / "demo.png")
    table = metrics_table(metrics, errors)
    table_path = out / "metrics.md"
    table_path.write_text(
        f"# dv demo\n\nprompt: `{composed.prompt}`  \nbackbone alone: `{plain_prompt}`  \n"
        f"mean ± standard error over seeds {config.seed}..{config.seed + config.seeds - 1}\n\n{table}"
    )
    result = DemoResult(
        video=composed.video,
        backbone_only_video=alone_path,
        contact_sheet=sheet_path,
        table=table_path,
        prompt=composed.prompt,
        backbone_only_prompt=plain_prompt,
        metrics=metrics,
        errors=errors,
        seconds=time.monotonic() - started,
        subject=subject_ref,
        motion=motion_ref,
    )
    (out / "metrics.json").write_text(json.dumps(result.as_json(), indent=2) + "\n")
    return result


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
