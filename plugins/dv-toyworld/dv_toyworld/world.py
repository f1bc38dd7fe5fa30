"""The toy world: coloured shapes moving over simple scenes, with captions.

Everything here is plain numpy and exact: a video is a function of an `Obj`, a `Motion`,
a `Scene` and a start position, so metrics can compare a generated video with what the
world knows it should contain. Images are uint8 [H, W, 3]; videos uint8 [F, H, W, 3];
coordinates are (x, y) in pixels with y pointing down.

Pretraining sees only the `SEEN_*` shapes and motions. `HELD_OUT_SHAPES` and
`HELD_OUT_MOTIONS` exist only for customisation: the words are in the vocabulary (a user
may type them) but the backbone never saw what they mean.

Object colours come from the whole gamut; a caption names the nearest of the seven
vocabulary colours. `HELD_OUT_COLOURS` lie between those, far from every one of them, and
pretraining never draws a colour near them: the backbone can draw colours all around
them but no word names them, as no word names the exact coat of a user's dog.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

SIZE = 32  # pixels per side
FRAMES = 8
FPS = 8

UInt8Array = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 200, 70),
    "blue": (40, 80, 230),
    "purple": (150, 60, 200),
    "pink": (250, 120, 190),
}
# Scenes are far from every object colour, so an object is never camouflaged.
SOLID_SCENES: dict[str, tuple[int, int, int]] = {
    "grass": (70, 120, 60),
    "sand": (205, 185, 140),
    "snow": (240, 240, 245),
    "sky": (130, 180, 235),
    "night": (20, 25, 50),
}
PATTERN_SCENES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "tiles": ((150, 150, 150), (95, 95, 95)),  # 4-pixel checkerboard
    "waves": ((30, 80, 150), (70, 130, 190)),  # 3-pixel horizontal bands
}
SCENES = (*SOLID_SCENES, *PATTERN_SCENES)

RGB = tuple[int, int, int]
# Between the vocabulary's colours: 79-95 RGB from the nearest (green, red, yellow), which
# leaves the best words at most a 0.34 colour match (metrics.COLOUR_SCALE is 120).
HELD_OUT_COLOURS: dict[str, RGB] = {
    "teal": (30, 170, 160),
    "crimson": (190, 20, 110),
    "lime": (160, 230, 40),
}
HELD_OUT_MARGIN = 30.0  # pretraining draws no colour this close (RGB distance) to a held-out one
SCENE_MARGIN = 70.0  # nor this close to a scene colour, so objects stand out (metrics segment at 40)
PALETTE_SHARE = (
    0.25  # of pretraining objects in a vocabulary colour exactly, so a word's own colour stays its likeliest
)

SEEN_SHAPES = ("circle", "square", "triangle", "diamond", "cross")
HELD_OUT_SHAPES = ("star", "ring")
SHAPES = SEEN_SHAPES + HELD_OUT_SHAPES
SIZES = {"small": 4.0, "big": 6.0}  # radius in pixels
TEXTURES = ("plain", "striped")

SEEN_MOTIONS = ("left", "right", "up", "down", "bounces")
HELD_OUT_MOTIONS = ("zigzags", "circles")
MOTIONS = SEEN_MOTIONS + HELD_OUT_MOTIONS
SPEEDS = {"slowly": 1.0, "quickly": 2.0}

# How a motion reads in a caption; "moves" stands for any motion when the caption omits it.
MOTION_PHRASES = {
    "left": "slides left",
    "right": "slides right",
    "up": "slides up",
    "down": "slides down",
    "bounces": "bounces",
    "zigzags": "zigzags",
    "circles": "circles",
}
GENERIC_SHAPE = "toy"  # the caption's noun when the shape is omitted; the subject init word
GENERIC_MOTION = "moves"

# Every word a caption or the demo can use; the tokenizer makes each one token.
VOCABULARY: tuple[str, ...] = (
    "a", "on", "in", "the", "and", "with", GENERIC_SHAPE, GENERIC_MOTION, "slides",
    *COLOURS, *SCENES, *SHAPES, *SIZES, *TEXTURES, *MOTIONS, *SPEEDS,
)  # fmt: skip


@dataclass(frozen=True)
class Obj:
    """An object. `colour` is a vocabulary colour or a `HELD_OUT_COLOURS` name; `rgb`, when
    set, is its exact colour (pretraining's gamut objects, captioned with `colour`)."""

    shape: str
    colour: str
    size: str = "big"
    texture: str = "plain"
    rgb: RGB | None = None

    @property
    def colour_rgb(self) -> RGB:
        if self.rgb is not None:
            return self.rgb
        return COLOURS[self.colour] if self.colour in COLOURS else HELD_OUT_COLOURS[self.colour]

    @property
    def colour_word(self) -> str:
        """The vocabulary's nearest word for the colour: all a caption can say of it."""
        return self.colour if self.colour in COLOURS else nearest_colour_word(self.colour_rgb)

    def words(self) -> str:
        texture = "" if self.texture == "plain" else f" {self.texture}"
        return f"{self.size} {self.colour_word}{texture} {self.shape}"

    @property
    def slug(self) -> str:
        return "-".join(w for w in (self.colour, "" if self.texture == "plain" else self.texture, self.shape) if w)


@dataclass(frozen=True)
class Motion:
    kind: str
    speed: str = "quickly"

    def words(self) -> str:
        return f"{MOTION_PHRASES[self.kind]} {self.speed}"

    @property
    def slug(self) -> str:
        return f"{self.kind}-{'fast' if self.speed == 'quickly' else 'slow'}"


def nearest_colour_word(rgb: RGB) -> str:
    target = np.array(rgb, np.float64)
    return min(COLOURS, key=lambda name: float(np.linalg.norm(np.array(COLOURS[name], np.float64) - target)))


# -------------------------------------------------------------------- drawing


def shape_mask(shape: str, radius: float, cx: float, cy: float, size: int = SIZE) -> BoolArray:
    """Pixels (centres at i + 0.5) covered by `shape` of `radius` centred at (cx, cy)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xs - cx, ys - cy
    r = radius
    if shape == "circle":
        return np.asarray(dx**2 + dy**2 <= r**2)
    if shape == "square":
        return np.asarray(np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r)
    if shape == "diamond":
        return np.asarray(np.abs(dx) + np.abs(dy) <= 1.15 * r)
    if shape == "triangle":  # apex up, flat base
        return np.asarray((dy <= 0.8 * r) & (np.abs(dx) <= 0.62 * (dy + r)))
    if shape == "cross":
        arm = 0.36 * r
        return np.asarray(((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r)))
    if shape == "ring":
        d2 = dx**2 + dy**2
        return np.asarray((d2 <= r**2) & (d2 >= (0.5 * r) ** 2))
    if shape == "star":  # five points, one up
        theta = np.arctan2(dy, dx) + np.pi / 2
        # Piecewise-linear radius between the tips (1.1 r) and the notches (0.45 r).
        phase = np.abs(((theta * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at tips, 0 at notches
        limit = r * (0.45 + 0.65 * phase)
        return np.asarray(np.sqrt(dx**2 + dy**2) <= limit)
    raise ValueError(f"unknown shape {shape!r}")


def scene_image(scene: str, size: int = SIZE) -> UInt8Array:
    """The background alone, [size, size, 3]."""
    if scene in SOLID_SCENES:
        return np.broadcast_to(np.array(SOLID_SCENES[scene], np.uint8), (size, size, 3)).copy()
    light, dark = (np.array(c, np.uint8) for c in PATTERN_SCENES[scene])
    ys, xs = np.mgrid[0:size, 0:size]
    pick = ((xs // 4) + (ys // 4)) % 2 == 0 if scene == "tiles" else (ys // 3) % 2 == 0
    return np.where(pick[..., None], light, dark).astype(np.uint8)


def object_colours(obj: Obj) -> tuple[UInt8Array, UInt8Array]:
    """(main colour, stripe colour) of an object."""
    main = np.array(obj.colour_rgb, np.float64)
    stripe = main * 0.5 if obj.texture == "striped" else main
    return main.astype(np.uint8), stripe.astype(np.uint8)


def draw(image: UInt8Array, obj: Obj, cx: float, cy: float) -> UInt8Array:
    """`image` with `obj` drawn centred at (cx, cy); stripes move with the object."""
    mask = shape_mask(obj.shape, SIZES[obj.size], cx, cy, image.shape[0])
    main, stripe = object_colours(obj)
    ys = np.arange(image.shape[0])[:, None] + 0.5 - cy
    stripes = (np.floor(ys / 2) % 2 == 1) & np.ones_like(mask)
    out = image.copy()
    out[mask & ~stripes] = main
    out[mask & stripes] = stripe
    return out


def object_image(obj: Obj, size: int = SIZE) -> tuple[UInt8Array, BoolArray]:
    """The object alone, centred (pixels, mask): what subject metrics compare with."""
    canvas = np.zeros((size, size, 3), np.uint8)
    c = size / 2
    return draw(canvas, obj, c, c), shape_mask(obj.shape, SIZES[obj.size], c, c, size)


# -------------------------------------------------------------------- motion


def displacements(motion: Motion, frames: int = FRAMES) -> FloatArray:
    """Where the object is at each frame relative to frame 0, [frames, 2] (x, y).

    Every motion is a fixed path from its start, so two videos of one motion have the same
    displacements wherever they start: that is what motion fidelity compares."""
    t = np.arange(frames, dtype=np.float64)
    s = SPEEDS[motion.speed]
    last = max(1, frames - 1)
    zeros = np.zeros_like(t)
    step = 1.25 * s  # pixels per frame for straight motion
    if motion.kind == "left":
        d = np.stack([-step * t, zeros], 1)
    elif motion.kind == "right":
        d = np.stack([step * t, zeros], 1)
    elif motion.kind == "up":
        d = np.stack([zeros, -step * t], 1)
    elif motion.kind == "down":
        d = np.stack([zeros, step * t], 1)
    elif motion.kind == "bounces":  # hops in place: up and back down, `s` hops per clip
        d = np.stack([zeros, -9.0 * np.abs(np.sin(np.pi * s * t / last))], 1)
    elif motion.kind == "zigzags":  # drifts right while going up and down in straight strokes
        phase = (t * s / 2.0) % 2.0  # period of 4 frames at speed 1
        tri = np.where(phase < 1, phase, 2 - phase) * 2 - 1  # -1..1
        d = np.stack([1.5 * t, 5.0 * tri + 5.0], 1)
    elif motion.kind == "circles":  # clockwise from the top: half a turn slowly, a full turn quickly
        angle = np.pi * s * t / last
        radius = 7.0
        d = np.stack([radius * np.sin(angle), radius * (1 - np.cos(angle))], 1)
    else:
        raise ValueError(f"unknown motion {motion.kind!r}")
    return np.asarray(d)


def random_start(rng: np.random.Generator, obj: Obj, d: FloatArray, size: int = SIZE) -> tuple[float, float]:
    """A start position that keeps the whole object inside the frame along the path."""
    margin = SIZES[obj.size] + 1.0
    lo = margin - d.min(0)  # [2]
    hi = size - margin - d.max(0)
    start = [float(rng.uniform(a, b)) if b > a else float((a + b) / 2) for a, b in zip(lo, hi, strict=True)]
    return start[0], start[1]


@dataclass(frozen=True)
class Clip:
    """One video of the world and everything known about it."""

    obj: Obj
    motion: Motion
    scene: str
    start: tuple[float, float]
    frames: int = FRAMES

    def trajectory(self) -> FloatArray:
        """Object centre per frame, [frames, 2]."""
        return displacements(self.motion, self.frames) + np.array(self.start)

    def render(self) -> UInt8Array:
        background = scene_image(self.scene)
        return np.stack([draw(background, self.obj, x, y) for x, y in self.trajectory()])

    def masks(self) -> BoolArray:
        """Where the object is in each frame, [frames, H, W]."""
        r = SIZES[self.obj.size]
        return np.stack([shape_mask(self.obj.shape, r, x, y) for x, y in self.trajectory()])

    def caption(self) -> str:
        return f"a {self.obj.words()} {self.motion.words()} on {self.scene}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "caption": self.caption()}


def photo(obj: Obj, scene: str, rng: np.random.Generator) -> UInt8Array:
    """A still of `obj` somewhere on `scene`, like a user's photo of a subject."""
    return photo_and_mask(obj, scene, rng)[0]


def photo_and_mask(obj: Obj, scene: str, rng: np.random.Generator) -> tuple[UInt8Array, BoolArray]:
    """`photo` and the object's mask in it."""
    cx, cy = random_start(rng, obj, np.zeros((1, 2)))
    return draw(scene_image(scene), obj, cx, cy), shape_mask(obj.shape, SIZES[obj.size], cx, cy)


# -------------------------------------------------------------------- sampling


def random_obj(rng: np.random.Generator, shapes: tuple[str, ...] = SEEN_SHAPES, gamut: bool = True) -> Obj:
    """A random seen object; `gamut=False` keeps to the seven vocabulary colours (the
    world of the first toyworld weights)."""
    shape = str(rng.choice(shapes))
    colour = str(rng.choice(list(COLOURS)))
    size, texture = str(rng.choice(list(SIZES))), str(rng.choice(TEXTURES))
    if not gamut or rng.random() < PALETTE_SHARE:
        return Obj(shape, colour, size, texture)
    rgb = random_gamut_colour(rng)
    return Obj(shape, nearest_colour_word(rgb), size, texture, rgb)


# What gamut colours keep away from, as arrays once rather than per draw.
_SCENE_RGB = np.array([*SOLID_SCENES.values(), *(c for pair in PATTERN_SCENES.values() for c in pair)], np.float64)
_HELD_OUT_RGB = np.array(list(HELD_OUT_COLOURS.values()), np.float64)


def random_gamut_colour(rng: np.random.Generator) -> RGB:
    """A colour from the whole RGB cube, except near a scene's or a held-out colour."""
    while True:
        rgb = rng.integers(0, 256, 3).astype(np.float64)
        if np.linalg.norm(_SCENE_RGB - rgb, axis=1).min() < SCENE_MARGIN:
            continue
        if np.linalg.norm(_HELD_OUT_RGB - rgb, axis=1).min() < HELD_OUT_MARGIN:
            continue
        return int(rgb[0]), int(rgb[1]), int(rgb[2])


def random_clip(
    rng: np.random.Generator,
    shapes: tuple[str, ...] = SEEN_SHAPES,
    motions: tuple[str, ...] = SEEN_MOTIONS,
    scenes: tuple[str, ...] = SCENES,
    frames: int = FRAMES,
    gamut: bool = True,
) -> Clip:
    obj = random_obj(rng, shapes, gamut)
    motion = Motion(str(rng.choice(motions)), str(rng.choice(list(SPEEDS))))
    d = displacements(motion, frames)
    return Clip(obj, motion, str(rng.choice(scenes)), random_start(rng, obj, d), frames)


def partial_caption(clip: Clip, rng: np.random.Generator, p_drop: float = 0.2) -> str:
    """A caption that leaves out some attributes, so prompts that name only a few (like
    "a <token> circles on sand") are in distribution. The shape falls back to "toy" and the
    motion to "moves", the words subjects and motions are initialised from."""
    obj, motion = clip.obj, clip.motion
    keep = lambda: rng.random() >= p_drop  # noqa: E731
    words = ["a"]
    if keep():
        words.append(obj.size)
    if keep():
        words.append(obj.colour_word)
    if obj.texture != "plain" and keep():
        words.append(obj.texture)
    words.append(obj.shape if keep() else GENERIC_SHAPE)
    if clip.frames > 1:
        if keep():
            words.append(MOTION_PHRASES[motion.kind])
            if keep():
                words.append(motion.speed)
        else:
            words.append(GENERIC_MOTION)
    if keep():
        words += ["on", clip.scene]
    return " ".join(words)


def scene_of(prompt: str) -> str | None:
    """The scene a prompt names (the last scene word in it), or None."""
    found = [w for w in prompt.lower().replace(",", " ").split() if w in SCENES]
    return found[-1] if found else None
