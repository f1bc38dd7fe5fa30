"""Writing toy-world photos and clips to folders, as a user would hand them to dv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dv_toyworld import world

PHOTO_SCENES = ("sand", "sky", "snow", "grass", "night")


def write_photos(folder: Path, obj: world.Obj, count: int, seed: int, masks: Path | None = None) -> list[Path]:
    """`count` PNG photos of `obj` on plain scenes, like photos of a pet in different rooms;
    with `masks`, also the subject masks dv's `--masks` reads (same names, white = subject,
    grown by a pixel so the loss sees the object's edge)."""
    folder.mkdir(parents=True, exist_ok=True)
    if masks is not None:
        masks.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        scene = PHOTO_SCENES[i % len(PHOTO_SCENES)]
        path = folder / f"{obj.slug}-{i}.png"
        image, mask = world.photo_and_mask(obj, scene, rng)
        Image.fromarray(image).save(path)
        if masks is not None:
            grown = np.pad(mask, 1)
            grown = grown[:-2, 1:-1] | grown[2:, 1:-1] | grown[1:-1, :-2] | grown[1:-1, 2:] | mask
            Image.fromarray((grown * 255).astype(np.uint8)).save(masks / path.name)
        paths.append(path)
    return paths


def write_gif(path: Path, video: world.UInt8Array, fps: int = world.FPS) -> Path:
    """A lossless clip: every toy-world frame has far fewer than 256 colours, so a GIF
    keeps them exactly (an H.264 file would blur 32x32 colours)."""
    frames = [Image.fromarray(f) for f in video]
    frames[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=round(1000 / fps),
        loop=0,
        disposal=1,
        optimize=False,
    )
    return path


def write_clips(folder: Path, clips: list[world.Clip]) -> list[Path]:
    """Each clip as a GIF plus `captions.txt`, the captions dv's motion learning reads."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, lines = [], []
    for i, clip in enumerate(clips):
        path = write_gif(folder / f"clip-{i}.gif", clip.render())
        paths.append(path)
        lines.append(f"{path.name}: {clip.caption()}")
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")
    return paths


def motion_clips(motion: world.Motion, performers: list[world.Obj], scenes: list[str], seed: int) -> list[world.Clip]:
    """Clips of `motion` by the given objects on the given scenes, from random starts."""
    rng = np.random.default_rng(seed)
    d = world.displacements(motion)
    return [
        world.Clip(obj, motion, scene, world.random_start(rng, obj, d))
        for obj, scene in zip(performers, scenes, strict=True)
    ]
