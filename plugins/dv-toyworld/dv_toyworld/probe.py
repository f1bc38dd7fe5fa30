"""Has the toy backbone learnt motion and shape? Three measurements of a weights file, no adapters.

    python -m dv_toyworld.probe [--weights FILE] [--seeds 4] [--json]

1. Generation: the backbone alone on prompts with seen motions (as `dv demo` samples:
   25 DDIM steps, guidance 5), toy metrics per seed and their mean.
2. Denoising: training clips that slide, noised to step t and denoised once; the path
   correlation of the predicted clean clip (its difference-weighted centre per frame) with
   the true path, with the caption and with an empty one. Motion recovered at small t
   comes from the noisy input; at large t (where sampling decides the path) only the
   caption can supply it.
3. Shape words: photos of seen shapes, noised to step t and denoised once; the error of
   the predicted clean frame on the object's latent cells with the true caption, with
   another seen shape's word in its place and with the generic `toy`. A model that uses
   the shape word predicts the object better with the true word, most at large t.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dv_toyworld import world

if TYPE_CHECKING:
    import torch

    from dreamvideo_cli import DDPMObjective
    from dreamvideo_cli.backbone import Components

PROMPTS = (
    (world.Obj("circle", "green", "big"), world.Motion("left", "slowly"), "sand"),
    (world.Obj("triangle", "red", "big"), world.Motion("down", "quickly"), "sky"),
    (world.Obj("square", "pink", "big"), world.Motion("right", "quickly"), "snow"),
    (world.Obj("circle", "blue", "big"), world.Motion("bounces", "quickly"), "grass"),
)
NOISE_STEPS = (200, 400, 600, 800, 950)
SHAPE_NOISE_STEPS = (300, 500, 700, 900)


def generation(weights: str | None, seeds: int) -> list[dict[str, Any]]:
    from dreamvideo_cli.metrics import EvalSample
    from dv_toyworld.demo import DemoConfig, backbone_only, describe
    from dv_toyworld.metrics import score_all

    rows = []
    for obj, motion, scene in PROMPTS:
        prompt = describe(obj, motion, scene)  # as pretraining captions it
        scores = []
        for seed in range(seeds):
            video = backbone_only(prompt, world.FRAMES, replace(DemoConfig(), seed=seed, backbone_path=weights))
            extras = {"toy_object": asdict(obj), "toy_motion": asdict(motion)}
            scores.append(score_all(EvalSample(frames=video, prompt=prompt, reference_images=[], extras=extras)))
        rows.append(
            {
                "prompt": prompt,
                "motion_fidelity": [round(s["motion_fidelity"], 3) for s in scores],
                "mean": {k: round(float(np.mean([s[k] for s in scores])), 3) for k in scores[0]},
            }
        )
    return rows


def denoising(weights: str | None, clips: int = 12) -> list[dict[str, Any]]:
    import torch

    from dv_toyworld import model, pretrain
    from dv_toyworld.backbone import ToyWorldBackbone
    from dv_toyworld.metrics import path_correlation

    parts = ToyWorldBackbone(path=weights).load("cpu")
    rng, gen = np.random.default_rng(5), torch.Generator().manual_seed(0)
    objective = model.pretraining_objective()  # the levels the backbone was pretrained at
    vae: Any = parts.codec.vae  # type: ignore[attr-defined]  # the space-to-depth VAE
    rows = []
    for t in NOISE_STEPS:
        found: dict[str, list[float]] = {"caption": [], "empty": []}
        for _ in range(clips):
            clip = world.random_clip(rng, frames=world.FRAMES)
            while clip.motion.kind not in ("left", "right", "up", "down"):
                clip = world.random_clip(rng, frames=world.FRAMES)
            x = torch.from_numpy(clip.render()[None]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # [1, 3, F, 32, 32]
            z = pretrain.to_latents(x)  # [1, 48, F, 8, 8]
            zt = noised(z, t, objective, gen)
            for key, caption in (("caption", clip.caption()), ("empty", "")):
                x0 = denoise_once(parts, zt, t, objective, caption)
                frames = vae.decode(x0[0].permute(1, 0, 2, 3)).sample  # [F, 3, 32, 32]
                pixels = ((frames.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()  # [F, 32, 32, 3]
                found[key].append(
                    path_correlation(soft_centroids(pixels, clip.scene), world.displacements(clip.motion))
                )
        rows.append({"t": t, **{k: round(float(np.mean(v)), 3) for k, v in found.items()}})
    return rows


def noised(z: torch.Tensor, t: int, objective: DDPMObjective, gen: torch.Generator) -> torch.Tensor:
    """Clean latents z at noise step t (the training forward process), noise from `gen`."""
    import torch

    return objective.add_noise(z, torch.randn(z.shape, generator=gen), torch.tensor([t]))


def denoise_once(parts: Components, zt: torch.Tensor, t: int, objective: DDPMObjective, caption: str) -> torch.Tensor:
    """The backbone's one-step prediction of the clean latents from zt with `caption`."""
    import torch

    from dreamvideo_cli import encode_text, tokenize

    with torch.no_grad():
        context = encode_text(parts, tokenize(parts, [caption]))  # [1, T, D]
        v = parts.denoise(zt, torch.tensor([t]), context)
    return objective.predicted_x0(zt, v, torch.tensor([t]))


def shape_words(weights: str | None) -> list[dict[str, Any]]:
    import torch

    from dv_toyworld import model, pretrain
    from dv_toyworld.backbone import ToyWorldBackbone

    parts = ToyWorldBackbone(path=weights).load("cpu")
    objective = model.pretraining_objective()  # the levels the backbone was pretrained at
    objs = [world.Obj(shape, colour, "big") for shape in world.SEEN_SHAPES for colour in ("pink", "blue", "green")]
    rows = []
    for t in SHAPE_NOISE_STEPS:
        rng, gen = np.random.default_rng(7), torch.Generator().manual_seed(t)
        errors: dict[str, list[float]] = {"true": [], "wrong": [], "toy": []}
        for obj in objs:
            image, mask = world.photo_and_mask(obj, "snow", rng)
            x = torch.from_numpy(image).permute(2, 0, 1).float()[None, :, None] / 127.5 - 1  # [1, 3, 1, 32, 32]
            z = pretrain.to_latents(x)  # [1, 48, 1, 8, 8]
            cells = pretrain.cells(torch.from_numpy(mask)[None, None, None].float())  # [1, 1, 1, 8, 8]
            zt = noised(z, t, objective, gen)
            wrong = world.SEEN_SHAPES[(world.SEEN_SHAPES.index(obj.shape) + 2) % len(world.SEEN_SHAPES)]
            for key, shape in (("true", obj.shape), ("wrong", wrong), ("toy", world.GENERIC_SHAPE)):
                x0 = denoise_once(parts, zt, t, objective, f"a big {obj.colour} {shape} on snow")
                error = ((x0.float() - z) ** 2).mean(1, keepdim=True)  # [1, 1, 1, 8, 8]
                errors[key].append(float((error * cells).sum() / cells.sum()))
        rows.append({"t": t, **{k: round(float(np.mean(v)), 4) for k, v in errors.items()}})
    return rows


def soft_centroids(frames: np.ndarray, scene: str) -> np.ndarray:
    """[F, H, W, 3] -> [F, 2]: each frame's centre of what differs from the scene, weighted
    by how much. At high noise the predicted clean frame is a faint, blurred average that
    the metrics' segmentation does not find; its weighted centre still moves if the
    prediction does."""
    weight = np.linalg.norm(frames - world.scene_image(scene, frames.shape[1]).astype(np.float64), axis=-1)  # [F, H, W]
    weight = weight / np.maximum(weight.sum((1, 2), keepdims=True), 1e-6)
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]] + 0.5
    return np.stack([(weight * xs).sum((1, 2)), (weight * ys).sum((1, 2))], 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dv_toyworld.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="a toyworld weights file (default: the committed one)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from dreamvideo_cli import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(1)
    made, denoised, shapes = generation(args.weights, args.seeds), denoising(args.weights), shape_words(args.weights)
    if args.json:
        weights = str(Path(args.weights)) if args.weights else "committed"
        print(
            json.dumps({"weights": weights, "generation": made, "denoising": denoised, "shape_words": shapes}, indent=2)
        )
        return 0
    for row in made:
        print(
            f"{row['prompt']}: motion fidelity {row['mean']['motion_fidelity']:+.2f} (seeds {row['motion_fidelity']})"
        )
    for row in denoised:
        print(
            f"x0 at t={row['t']}: path correlation {row['caption']:+.2f} with the caption, {row['empty']:+.2f} without"
        )
    for row in shapes:
        print(
            f"x0 at t={row['t']}: object error {row['true']:.4f} with the true shape word, "
            f"{row['wrong']:.4f} with another, {row['toy']:.4f} with 'toy'"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
