"""The paper's Tables 1 and 5 on the toy world: held-out subjects x held-out motions.

    python -m dv_toyworld.ablation --output toyworld-ablation --seed 0

Rows (as in the paper's Table 5, plus the backbone alone):
- DreamVideo: subject (textual inversion + identity adapter) + motion adapter learnt with
  appearance guidance, composed as the demo composes (lambda = its --appearance-strength).
- DreamVideo, lambda = 1 at compose: the same adapters, composed with the paper's
  inference (a subject photo's appearance embedding at full strength).
- w/o textual identity: the subject's token stays at its init word ("toy"); only the
  identity adapter learns.
- w/o identity adapter: the learnt token alone (the identity adapter composed at scale 0),
  with the motion adapter: textual inversion, the paper's Table 2 baseline, plus motion.
- w/o motion adapter: the subject alone, with the motion named in words.
- w/o appearance guidance: the motion adapter learnt and used with lambda = 0.
- backbone alone: no adapters, the best plain-text description of the video.

Everything is learnt through the engine (`learn_subject`, `learn_motion`, `compose`)
into a registry under --output, with the demo's step counts, clips and scene. Every number
is the mean over subjects x motions x seeds; the table and per-video scores go to --output.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from dv_toyworld import data, world
from dv_toyworld.demo import (
    DemoConfig,
    backbone_only,
    describe,
    evaluate,
    metrics_table,
    standard_error,
)

# Colours no word names (world.HELD_OUT_COLOURS), in seen shapes: the backbone can draw
# them, the words give only the nearest vocabulary colour.
SUBJECTS = (
    world.Obj("circle", "teal", "big"),
    world.Obj("square", "crimson", "big"),
    # Plain: striped, its half-bright stripes (80, 115, 20) all but vanish on the grass of one
    # of its photos, and the method learnt it worse than the words (docs/toyworld.md).
    world.Obj("triangle", "lime", "big"),
)
MOTIONS = (world.Motion("circles", "quickly"), world.Motion("zigzags", "quickly"))
METRICS = ("subject_fidelity", "motion_fidelity", "text_alignment", "temporal_consistency")
ROWS = (
    "DreamVideo",
    "DreamVideo, lambda = 1 at compose",
    "w/o textual identity",
    "w/o identity adapter",
    "w/o motion adapter",
    "w/o appearance guidance",
    "backbone alone",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dv_toyworld.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", dest="out", type=Path, default=Path("toyworld-ablation"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=4, help="sampling seeds per subject x motion")
    p.add_argument("--subjects", type=int, default=len(SUBJECTS))
    p.add_argument("--motions", type=int, default=len(MOTIONS))
    p.add_argument("--quick", action="store_true", help="a few steps of everything (tests)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--backbone-path", default=None, help="another toyworld weights file")
    p.add_argument("--motion-scale", type=float, default=None, help="compose's --motion-scale (default: the demo's)")
    args = p.parse_args(argv)

    import torch

    from dv_registry import Registry

    if args.threads:
        torch.set_num_threads(args.threads)
    base = DemoConfig(seed=args.seed, backbone_path=args.backbone_path)
    if args.motion_scale is not None:
        base = replace(base, motion_scale=args.motion_scale)
    if args.quick:
        base = base.quick()
    started = time.monotonic()
    registry = Registry(args.out / "registry")
    rows = run(args.out, base, SUBJECTS[: args.subjects], MOTIONS[: args.motions], args.seeds, registry)
    means = {row: {k: round(float(np.mean([s[k] for s in rows[row]])), 3) for k in METRICS} for row in ROWS}
    errors = {row: {k: standard_error([s[k] for s in rows[row]]) for k in METRICS} for row in ROWS}
    table = metrics_table(means, errors)
    command = "python -m dv_toyworld.ablation " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    report = {
        "command": command,
        "seconds": round(time.monotonic() - started),
        "subjects": [asdict(s) for s in SUBJECTS[: args.subjects]],
        "motions": [asdict(m) for m in MOTIONS[: args.motions]],
        "seeds": args.seeds,
        "config": {k: v for k, v in asdict(base).items() if k not in ("subject", "motion", "performers")},
        "means": means,
        "standard_errors": errors,
        "videos": rows,
    }
    (args.out / "ablation.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "ablation.md").write_text(table)
    print(table)
    return 0


def run(
    out: Path,
    base: DemoConfig,
    subjects: tuple[world.Obj, ...],
    motions: tuple[world.Motion, ...],
    seeds: int,
    registry: Any,
) -> dict[str, list[dict[str, Any]]]:
    """Learn every subject and motion (and their ablated variants) once, then compose each
    pair under every row; returns per-video scores by row."""
    from dreamvideo_cli import learn_motion, learn_subject

    learnt_subjects: dict[tuple[int, bool], str] = {}
    photos: dict[int, list[np.ndarray]] = {}
    for i, obj in enumerate(subjects):
        folder = out / "data" / f"subject-{i}"
        masks = out / "data" / f"subject-{i}-masks" if base.masks else None
        paths = data.write_photos(folder, obj, base.photos, base.seed + 100 * i, masks=masks)
        from dreamvideo_cli import media

        photos[i] = [np.asarray(media.load_photo(p)) for p in paths]
        for textual in (True, False):
            name = f"s{i}-{obj.slug}" + ("" if textual else "-no-ti")
            subject_config = base.subject_config(masks, embedding_steps=base.embedding_steps if textual else 0)
            m = learn_subject(folder, name, subject_config, registry=registry)
            learnt_subjects[(i, textual)] = f"{m.name}:{m.tag}"
            print(f"learnt {learnt_subjects[(i, textual)]}", flush=True)

    learnt_motions: dict[tuple[int, bool], str] = {}
    for j, motion in enumerate(motions):
        folder = out / "data" / f"motion-{j}"
        clips = data.motion_clips(motion, list(base.performers), list(base.clip_scenes), base.seed + 1 + 100 * j)
        data.write_clips(folder, clips)
        for guided in (True, False):
            name = f"m{j}-{motion.slug}" + ("" if guided else "-no-ag")
            motion_config = base.motion_config(motion, appearance_strength=1.0 if guided else 0.0)
            m = learn_motion(folder, name, motion_config, registry=registry)
            learnt_motions[(j, guided)] = f"{m.name}:{m.tag}"
            print(f"learnt {learnt_motions[(j, guided)]}", flush=True)

    rows: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}
    scene = base.scene  # the demo's: in no clip and no photo
    for i, obj in enumerate(subjects):
        for j, motion in enumerate(motions):
            config = replace(base, subject=obj, motion=motion)
            plain = describe(obj, motion, scene)
            lam = base.appearance_strength  # the demo's lambda at compose
            for seed in range(base.seed, base.seed + seeds):
                config = replace(config, seed=seed)
                videos = {
                    "DreamVideo": _compose(
                        out, learnt_subjects[(i, True)], learnt_motions[(j, True)], f"on {scene}", config, registry, lam
                    ),
                    "DreamVideo, lambda = 1 at compose": _compose(
                        out, learnt_subjects[(i, True)], learnt_motions[(j, True)], f"on {scene}", config, registry, 1.0
                    ),
                    "w/o textual identity": _compose(
                        out,
                        learnt_subjects[(i, False)],
                        learnt_motions[(j, True)],
                        f"on {scene}",
                        config,
                        registry,
                        lam,
                    ),
                    "w/o identity adapter": _compose(
                        out,
                        learnt_subjects[(i, True)],
                        learnt_motions[(j, True)],
                        f"on {scene}",
                        config,
                        registry,
                        lam,
                        subject_scale=0.0,
                    ),
                    "w/o motion adapter": _compose(
                        out,
                        learnt_subjects[(i, True)],
                        "-",
                        f"a {{subject}} {motion.words()} on {scene}",
                        config,
                        registry,
                        1.0,
                    ),
                    "w/o appearance guidance": _compose(
                        out,
                        learnt_subjects[(i, True)],
                        learnt_motions[(j, False)],
                        f"on {scene}",
                        config,
                        registry,
                        0.0,
                    ),
                    "backbone alone": backbone_only(plain, world.FRAMES, config),
                }
                for row, video in videos.items():
                    scores = evaluate(video, plain, config, photos[i])
                    rows[row].append(
                        {**scores, "subject": obj.slug, "motion": motion.slug, "scene": scene, "seed": seed}
                    )
                print(
                    f"{obj.slug} x {motion.slug} on {scene}, seed {seed}: "
                    + "; ".join(
                        f"{r}: {rows[r][-1]['subject_fidelity']:.2f}/{rows[r][-1]['motion_fidelity']:.2f}" for r in ROWS
                    ),
                    flush=True,
                )
    return rows


def _compose(
    out: Path,
    subject: str,
    motion: str,
    prompt: str,
    config: DemoConfig,
    registry: Any,
    strength: float,
    subject_scale: float = 1.0,
) -> np.ndarray:
    from dreamvideo_cli import compose, media

    # Every row's video keeps its own file: the lambda and identity-scale rows reuse adapters.
    scale = "" if subject_scale == 1.0 else f"-identity{subject_scale:g}"
    scale += f"-lambda{strength:g}"
    target = out / "videos" / f"{subject}-{motion}{scale}-{config.seed}.gif".replace(":", "_").replace("-.", ".")
    target.parent.mkdir(parents=True, exist_ok=True)
    result = compose(
        subject,
        motion,
        prompt,
        target,
        config.compose_config(subject_scale=subject_scale, appearance_strength=strength),
        registry=registry,
    )
    return np.asarray(media.read_frames(result.video, None))


if __name__ == "__main__":
    raise SystemExit(main())
