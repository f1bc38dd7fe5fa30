from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from dv_toyworld import data, world


def test_rendering_is_deterministic() -> None:
    a = [world.random_clip(np.random.default_rng(7)) for _ in range(3)]
    b = [world.random_clip(np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.render(), y.render())
        assert x.render().shape == (world.FRAMES, world.SIZE, world.SIZE, 3)


def test_caption_names_what_is_rendered() -> None:
    clip = world.Clip(
        world.Obj("square", "red", "small", "striped"), world.Motion("left", "slowly"), "grass", (20.0, 16.0)
    )
    assert clip.caption() == "a small red striped square slides left slowly on grass"
    video = clip.render()
    # Background is the scene's colour; the object is red where it is drawn, and moves left.
    assert tuple(video[0, 0, 0]) == world.SOLID_SCENES["grass"]
    assert tuple(video[0, 16, 20]) in (world.COLOURS["red"], tuple(int(c * 0.5) for c in world.COLOURS["red"]))
    xs = clip.trajectory()[:, 0]
    assert np.all(np.diff(xs) < 0)


def test_partial_captions_use_only_vocabulary_words() -> None:
    rng = np.random.default_rng(0)
    vocab = set(world.VOCABULARY)
    for _ in range(200):
        clip = world.random_clip(rng)
        words = world.partial_caption(clip, rng).split()
        assert set(words) <= vocab
        assert world.MOTION_PHRASES[clip.motion.kind].split()[0] in words or world.GENERIC_MOTION in words


def test_pretraining_never_shows_held_out_shapes_or_motions() -> None:
    rng = np.random.default_rng(1)
    clips = [world.random_clip(rng) for _ in range(500)]
    assert not {c.obj.shape for c in clips} & set(world.HELD_OUT_SHAPES)
    assert not {c.motion.kind for c in clips} & set(world.HELD_OUT_MOTIONS)
    assert {c.obj.shape for c in clips} == set(world.SEEN_SHAPES)


@pytest.mark.parametrize("kind", world.MOTIONS)
def test_paths_stay_inside_the_frame(kind: str) -> None:
    rng = np.random.default_rng(2)
    for speed in world.SPEEDS:
        for size in world.SIZES:
            obj = world.Obj("circle", "red", size)
            d = world.displacements(world.Motion(kind, speed))
            x, y = world.random_start(rng, obj, d)
            path = d + np.array([x, y])
            r = world.SIZES[size]
            assert path.min() >= r and path.max() <= world.SIZE - r


def test_every_shape_is_drawn_and_distinct() -> None:
    masks = {s: world.shape_mask(s, 6.0, 16.0, 16.0) for s in world.SHAPES}
    for s, m in masks.items():
        assert 30 < m.sum() < 200, s
    for a in world.SHAPES:
        for b in world.SHAPES:
            if a < b:
                assert (masks[a] != masks[b]).sum() > 8, (a, b)


def test_clips_written_as_gif_read_back_exactly(tmp_path: Path) -> None:
    from dreamvideo_cli import media

    clips = data.motion_clips(world.Motion("circles"), [world.Obj("square", "blue")], ["tiles"], seed=0)
    (path,) = data.write_clips(tmp_path, clips)
    frames = media.read_frames(path, None, world.SIZE, world.SIZE)
    assert np.array_equal(frames, clips[0].render())
    assert media.frame_stride(media.probe_clip(path).fps, world.FPS) == 1
    assert media.read_captions(tmp_path, [path])[path] == clips[0].caption()


def test_photos_are_plain_backgrounds_with_the_object(tmp_path: Path) -> None:
    obj = world.Obj("star", "pink")
    paths = data.write_photos(tmp_path, obj, 4, seed=0)
    assert len(paths) == 4 and len({p.read_bytes() for p in paths}) == 4
    assert asdict(obj)["shape"] == "star"


def test_scene_of_prompt() -> None:
    assert world.scene_of("a <toy-pink-star> circles quickly on snow") == "snow"
    assert world.scene_of("a red circle") is None


def test_gamut_colours_avoid_scenes_and_held_out_colours_and_are_captioned_by_the_nearest_word() -> None:
    rng = np.random.default_rng(3)
    objs = [world.random_obj(rng) for _ in range(400)]
    gamut = [o for o in objs if o.rgb is not None]
    assert 0.6 < len(gamut) / len(objs) < 0.9  # the rest keep a vocabulary colour exactly
    scenes = [*world.SOLID_SCENES.values(), *(c for pair in world.PATTERN_SCENES.values() for c in pair)]
    for obj in gamut:
        rgb = np.array(obj.rgb, float)
        assert min(np.linalg.norm(rgb - np.array(c, float)) for c in scenes) >= world.SCENE_MARGIN
        assert (
            min(np.linalg.norm(rgb - np.array(c, float)) for c in world.HELD_OUT_COLOURS.values())
            >= world.HELD_OUT_MARGIN
        )
        assert obj.colour == world.nearest_colour_word(obj.rgb) and obj.colour in world.COLOURS
        assert obj.colour in world.partial_caption(
            world.Clip(obj, world.Motion("left"), "snow", (16.0, 16.0)), np.random.default_rng(0), p_drop=0.0
        )


def test_held_out_colours_are_drawn_exactly_but_described_by_the_nearest_vocabulary_word() -> None:
    teal = world.Obj("circle", "teal")
    assert teal.words() == "big green circle" and teal.slug == "teal-circle"
    image, mask = world.object_image(teal)
    assert tuple(image[mask][0]) == world.HELD_OUT_COLOURS["teal"]
    assert "teal" not in world.VOCABULARY and all(name not in world.VOCABULARY for name in world.HELD_OUT_COLOURS)
    for rgb in world.HELD_OUT_COLOURS.values():  # far enough that the best words miss by a lot
        assert min(np.linalg.norm(np.array(rgb, float) - np.array(c, float)) for c in world.COLOURS.values()) > 75


def test_palette_pretraining_draws_as_the_first_weights_did() -> None:
    """`pretrain --palette` must be the world the step-8,000 weights learnt: no gamut
    colours, and the same random draws as before gamut colours existed."""
    rng = np.random.default_rng(11)
    objs = [world.random_obj(rng, gamut=False) for _ in range(50)]
    assert all(o.rgb is None and o.colour in world.COLOURS for o in objs)
    rng = np.random.default_rng(11)
    old = [
        (
            str(rng.choice(world.SEEN_SHAPES)),
            str(rng.choice(list(world.COLOURS))),
            str(rng.choice(list(world.SIZES))),
            str(rng.choice(world.TEXTURES)),
        )
        for _ in range(50)
    ]
    assert [(o.shape, o.colour, o.size, o.texture) for o in objs] == old
