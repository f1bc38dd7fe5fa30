from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.metrics import EvalSample
from dv_toyworld import metrics, world

CLIPS = [
    world.Clip(world.Obj("star", "pink", "big"), world.Motion("circles", "quickly"), "snow", (16.0, 9.0)),
    world.Clip(
        world.Obj("ring", "orange", "small", "striped"), world.Motion("zigzags", "slowly"), "tiles", (8.0, 10.0)
    ),
    world.Clip(world.Obj("cross", "green", "big", "striped"), world.Motion("left", "slowly"), "grass", (22.0, 16.0)),
    world.Clip(world.Obj("triangle", "blue", "small"), world.Motion("bounces", "quickly"), "waves", (16.0, 24.0)),
]


def sample(clip: world.Clip, video: np.ndarray | None = None, **extras: object) -> EvalSample:
    return EvalSample(
        frames=clip.render() if video is None else video,
        prompt=clip.caption(),
        extras={"toy_object": asdict(clip.obj), "toy_motion": asdict(clip.motion), **extras},
    )


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: c.caption())
def test_ground_truth_scores_about_one(clip: world.Clip) -> None:
    scores = metrics.score_all(sample(clip))
    assert scores["subject_fidelity"] > 0.95
    assert scores["motion_fidelity"] > 0.99
    assert scores["text_alignment"] > 0.99
    assert scores["temporal_consistency"] > 0.9  # sub-pixel positions change area and stripes a little


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: c.caption())
def test_another_shape_or_colour_scores_lower(clip: world.Clip) -> None:
    truth = metrics.score_all(sample(clip))["subject_fidelity"]
    shape = "square" if clip.obj.shape != "square" else "circle"
    colour = "yellow" if clip.obj.colour != "yellow" else "red"
    for other in (
        world.Obj(shape, clip.obj.colour, clip.obj.size, clip.obj.texture),
        world.Obj(clip.obj.shape, colour, clip.obj.size, clip.obj.texture),
    ):
        video = world.Clip(other, clip.motion, clip.scene, clip.start).render()
        assert metrics.score_all(sample(clip, video))["subject_fidelity"] < truth - 0.05


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: c.caption())
def test_another_motion_scores_lower(clip: world.Clip) -> None:
    kind = "left" if clip.motion.kind != "left" else "right"
    other = world.Clip(clip.obj, world.Motion(kind, clip.motion.speed), clip.scene, (10.0, 16.0)).render()
    assert metrics.score_all(sample(clip, other))["motion_fidelity"] < 0.5


def test_motion_fidelity_ignores_where_the_path_starts() -> None:
    clip = CLIPS[0]
    moved = world.Clip(clip.obj, clip.motion, clip.scene, (clip.start[0] - 6, clip.start[1] + 4))
    s = sample(clip, moved.render())
    assert metrics.ToyMotionFidelity().score(s) > 0.99
    # The same comparison against a reference video instead of the known motion.
    s2 = EvalSample(frames=moved.render(), prompt=clip.caption(), extras={"reference_video": clip.render()})
    assert metrics.ToyMotionFidelity().score(s2) > 0.99


def test_still_or_missing_object_has_no_motion() -> None:
    clip = CLIPS[0]
    still = np.stack([world.draw(world.scene_image("snow"), clip.obj, 16, 16)] * world.FRAMES)
    assert metrics.ToyMotionFidelity().score(sample(clip, still)) == 0.0
    empty = np.stack([world.scene_image("snow")] * world.FRAMES)
    assert metrics.ToyMotionFidelity().score(sample(clip, empty)) == 0.0
    assert metrics.ToySubjectFidelity().score(sample(clip, empty)) == 0.0


def test_subject_fidelity_from_reference_photos() -> None:
    clip = CLIPS[0]
    rng = np.random.default_rng(0)
    photos = [world.photo(clip.obj, scene, rng) for scene in ("sand", "sky", "night")]
    same = EvalSample(frames=clip.render(), prompt=clip.caption(), reference_images=photos)
    other = world.Clip(world.Obj("circle", "blue"), clip.motion, clip.scene, clip.start).render()
    different = EvalSample(frames=other, prompt=clip.caption(), reference_images=photos)
    m = metrics.ToySubjectFidelity()
    assert m.score(same) > 0.9
    assert m.score(different) < m.score(same) - 0.2


def test_text_alignment_follows_the_scene_word() -> None:
    clip = CLIPS[0]
    video = clip.render()
    right = metrics.ToyTextAlignment().score(EvalSample(frames=video, prompt="a toy on snow"))
    wrong = metrics.ToyTextAlignment().score(EvalSample(frames=video, prompt="a toy on night"))
    assert right > 0.99 and wrong < 0.2
    with pytest.raises(DVError):
        metrics.ToyTextAlignment().score(EvalSample(frames=video, prompt="a toy"))


def test_flicker_lowers_temporal_consistency() -> None:
    clip = CLIPS[0]
    video = clip.render()
    noisy = np.clip(video.astype(int) + np.random.default_rng(0).integers(-60, 60, video.shape), 0, 255).astype(
        np.uint8
    )
    steady = metrics.ToyTemporalConsistency().score(EvalSample(frames=video))
    assert metrics.ToyTemporalConsistency().score(EvalSample(frames=noisy)) < steady - 0.1


def test_metrics_are_registered() -> None:
    from dreamvideo_cli.plugins import get_metrics

    names = set(get_metrics())
    assert {"toy-subject-fidelity", "toy-motion-fidelity", "toy-text-alignment", "toy-temporal-consistency"} <= names


def test_real_videos_are_refused_so_dv_eval_skips_them() -> None:
    big = np.zeros((8, 64, 64, 3), np.uint8)
    for metric in (metrics.ToyTemporalConsistency(), metrics.ToyTextAlignment()):
        with pytest.raises(DVError):
            metric.score(EvalSample(frames=big, prompt="a toy on snow"))


def test_motion_known_from_a_demo_motion_name() -> None:
    clip = CLIPS[0]
    s = EvalSample(
        frames=clip.render(), prompt=clip.caption(), extras={"metadata": {"motion": {"ref": "toy-circles-fast:v1"}}}
    )
    assert metrics.ToyMotionFidelity().score(s) > 0.99


def test_a_held_out_colour_scores_its_own_video_high_and_the_nearest_words_colour_low() -> None:
    teal = world.Clip(world.Obj("circle", "teal"), world.Motion("circles", "quickly"), "snow", (16.0, 9.0))
    words = world.Clip(world.Obj("circle", "green"), teal.motion, teal.scene, teal.start)
    extras = {"toy_object": {**asdict(teal.obj), "rgb": None}}  # a held-out colour by its name
    own = metrics.score_all(sample(teal, **extras))["subject_fidelity"]
    nearest = metrics.score_all(sample(teal, words.render(), **extras))["subject_fidelity"]
    assert own > 0.95 and nearest < own - 0.35
    # A gamut object's exact colour survives JSON (a list there, a tuple in Obj).
    gamut = world.Obj("circle", "green", rgb=(60, 210, 120))
    clip = world.Clip(gamut, teal.motion, teal.scene, teal.start)
    as_json = {"toy_object": {**asdict(gamut), "rgb": [60, 210, 120]}}
    assert metrics.score_all(sample(clip, **as_json))["subject_fidelity"] > 0.95
