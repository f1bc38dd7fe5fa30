"""Exact metrics for toy-world videos, from what the world knows about its own videos.

A toy-world frame is a background plus one object, so the object can be segmented from
an estimate of the background, and its shape, colour and path compared with the
reference object and motion. The reference comes from `EvalSample.extras` when the
caller knows it (`toy_object`, `toy_motion`: dicts of `world.Obj` / `world.Motion`
fields, or `reference_trajectory`: [F, 2]), else from segmenting the reference images
(photos on a plain background) or `reference_video` frames.

| metric (demo key)                            | what it measures                                    |
|----------------------------------------------|-----------------------------------------------------|
| toy-subject-fidelity (subject_fidelity)      | per frame, 0.5 * shape IoU + 0.5 * colour match     |
| toy-motion-fidelity (motion_fidelity)        | correlation of the object's path with the reference |
| toy-text-alignment (text_alignment)          | how well the background is the prompt's scene       |
| toy-temporal-consistency (temporal_consistency) | steady background and object between frames      |
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.metrics import EvalSample, Metric
from dv_toyworld import world

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

OBJECT_THRESHOLD = 40.0  # RGB distance from the background that counts as object
COLOUR_SCALE = 120.0  # RGB distance at which two colours no longer match at all


# -------------------------------------------------------------------- segmentation


def _largest_component(mask: BoolArray) -> BoolArray:
    """The largest 8-connected component of a small mask (flood fill; frames are 32x32)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, component = deque([(int(y0), int(x0))]), []
        while queue:
            y, x = queue.popleft()
            component.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        if len(component) > len(best):
            best = component
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best, strict=True)
        out[list(ys), list(xs)] = True
    return out


def _dilate(mask: BoolArray) -> BoolArray:
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def estimate_background(frames: npt.NDArray[np.uint8], scene: str | None = None) -> FloatArray:
    """[F, H, W, 3] -> [H, W, 3]. The known `scene` when the video shows it; else a plain
    background (the border agrees with its median colour) is that colour everywhere and a
    patterned one is the per-pixel median over time, which removes an object that moves."""
    x = frames.astype(np.float64)
    if scene is not None:
        known = world.scene_image(scene, frames.shape[1]).astype(np.float64)
        if (np.linalg.norm(np.median(x, axis=0) - known, axis=-1) < OBJECT_THRESHOLD).mean() > 0.6:
            return known
    border = np.concatenate(
        [x[:, :2].reshape(-1, 3), x[:, -2:].reshape(-1, 3), x[:, :, :2].reshape(-1, 3), x[:, :, -2:].reshape(-1, 3)]
    )
    colour = np.median(border, axis=0)
    agree = np.linalg.norm(border - colour, axis=1) < OBJECT_THRESHOLD / 2
    if agree.mean() > 0.7:
        return np.broadcast_to(colour, x.shape[1:]).copy()
    return np.asarray(np.median(x, axis=0))


def object_masks(frames: npt.NDArray[np.uint8], scene: str | None = None) -> BoolArray:
    """[F, H, W, 3] -> [F, H, W]: the object in each frame (its largest blob; may be empty).
    Blobs a pixel apart count as one, so a striped object stays whole."""
    bg = estimate_background(frames, scene)
    far = np.linalg.norm(frames.astype(np.float64) - bg, axis=-1) > OBJECT_THRESHOLD  # [F, H, W]
    return np.stack([m & _largest_component(_dilate(m)) for m in far])


def centroids(masks: BoolArray) -> FloatArray:
    """[F, H, W] -> [F, 2] object centres (x, y) in pixels; NaN where a frame has none."""
    out = np.full((len(masks), 2), np.nan)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[i] = (xs.mean() + 0.5, ys.mean() + 0.5)
    return out


def _colour_match(a: FloatArray, b: FloatArray) -> float:
    return max(0.0, 1.0 - float(np.linalg.norm(a - b)) / COLOUR_SCALE)


def _iou(a: BoolArray, b: BoolArray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def _shift(mask: BoolArray, dx: int, dy: int) -> BoolArray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    src = mask[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


# -------------------------------------------------------------------- references


def _scene(sample: EvalSample) -> str | None:
    return world.scene_of(sample.prompt) if sample.prompt else None


def _obj(extras: dict[str, Any]) -> world.Obj | None:
    data = extras.get("toy_object")
    if data is None:
        return None
    if isinstance(data, world.Obj):
        return data
    rgb = data.get("rgb")  # a list once it has been through JSON
    return world.Obj(**{**data, "rgb": None if rgb is None else (int(rgb[0]), int(rgb[1]), int(rgb[2]))})


def _motion(extras: dict[str, Any]) -> world.Motion | None:
    data = extras.get("toy_motion")
    if data is None:
        return _motion_from_metadata(extras.get("metadata") or {})
    return data if isinstance(data, world.Motion) else world.Motion(**data)


def _motion_from_metadata(metadata: dict[str, Any]) -> world.Motion | None:
    """`dv eval` passes compose's metadata: a motion stored as `toy-<kind>-<fast|slow>`
    (as `dv demo` names them) says which world motion it is."""
    ref = str((metadata.get("motion") or {}).get("ref") or "")
    name = ref.split(":")[0].split("@")[0]
    parts = name.split("-")
    if len(parts) == 3 and parts[0] == "toy" and parts[1] in world.MOTIONS and parts[2] in ("fast", "slow"):
        return world.Motion(parts[1], "quickly" if parts[2] == "fast" else "slowly")
    return None


def _toy_frames(sample: EvalSample) -> npt.NDArray[np.uint8]:
    frames = np.asarray(sample.frames, np.uint8)
    if frames.ndim != 4 or frames.shape[1:] != (world.SIZE, world.SIZE, 3):
        raise DVError(f"not a toy-world video: frames are {frames.shape[1:3]}, not {world.SIZE}x{world.SIZE}")
    return frames


def subject_scores(frames: npt.NDArray[np.uint8], sample: EvalSample) -> FloatArray:
    """Per-frame subject fidelity in [0, 1]: 0.5 * shape IoU + 0.5 * colour match."""
    masks = object_masks(frames, _scene(sample))
    obj = _obj(sample.extras)
    refs: list[tuple[BoolArray, FloatArray]] = []
    if obj is None:
        if not sample.reference_images:
            raise DVError("toy-subject-fidelity needs reference images or extras['toy_object']")
        for image in sample.reference_images:
            m = object_masks(np.asarray(image)[None])[0]
            if m.any():
                refs.append((m, np.asarray(image, np.float64)[m].mean(0)))
        if not refs:
            raise DVError("no object found in the reference images", "photos need a plain background")
    scores = np.zeros(len(frames))
    for i, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        if not mask.any():
            continue
        colour = frame.astype(np.float64)[mask].mean(0)
        cx, cy = centroids(mask[None])[0]
        if obj is not None:
            # Render the reference where its centroid lands on this object's: a faithful
            # object then overlaps pixel for pixel, whatever its sub-pixel position.
            _, ref_mask = world.object_image(obj)
            rx, ry = centroids(ref_mask[None])[0]
            c = world.SIZE / 2
            image = world.draw(np.zeros_like(frame), obj, cx - (rx - c), cy - (ry - c))
            ref = world.shape_mask(obj.shape, world.SIZES[obj.size], cx - (rx - c), cy - (ry - c))
            scores[i] = 0.5 * _iou(mask, ref) + 0.5 * _colour_match(colour, image.astype(np.float64)[ref].mean(0))
            continue
        best = 0.0
        for ref_mask, ref_colour in refs:
            rx, ry = centroids(ref_mask[None])[0]
            moved = _shift(ref_mask, round(cx - rx), round(cy - ry))
            iou = max(_iou(mask, _shift(moved, ox, oy)) for ox in (-1, 0, 1) for oy in (-1, 0, 1))
            best = max(best, 0.5 * iou + 0.5 * _colour_match(colour, ref_colour))
        scores[i] = best
    return scores


def reference_trajectory(sample: EvalSample, frames: int) -> FloatArray:
    motion = _motion(sample.extras)
    if motion is not None:
        return world.displacements(motion, frames)
    if "reference_trajectory" in sample.extras:
        return np.asarray(sample.extras["reference_trajectory"], np.float64)
    if "reference_video" in sample.extras:
        return centroids(object_masks(np.asarray(sample.extras["reference_video"], np.uint8)))
    raise DVError("toy-motion-fidelity needs extras['toy_motion'], ['reference_trajectory'] or ['reference_video']")


def path_correlation(path: FloatArray, reference: FloatArray) -> float:
    """Correlation of two paths [F, 2] (NaN rows are filled from their neighbours): both
    centred, flattened, cosine. 1 is the same path up to position and scale; a still or
    missing object is 0."""
    n = min(len(path), len(reference))
    path, reference = path[:n].copy(), reference[:n].copy()
    found = ~np.isnan(path[:, 0])
    if found.sum() < max(2, n // 2):
        return 0.0
    t = np.arange(n)
    for axis in range(2):
        path[:, axis] = np.interp(t, t[found], path[found, axis])
    a = (path - path.mean(0)).ravel()
    b = (reference - reference.mean(0)).ravel()
    if np.linalg.norm(a) < 0.5 or np.linalg.norm(b) < 1e-6:
        return 0.0
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def text_alignment(frames: npt.NDArray[np.uint8], prompt: str) -> float:
    """How close the background, outside the object, is to the scene the prompt names."""
    scene = world.scene_of(prompt)
    if scene is None:
        raise DVError(f"the prompt {prompt!r} names no toy-world scene", f"scenes: {', '.join(world.SCENES)}")
    target = world.scene_image(scene, frames.shape[1]).astype(np.float64)
    masks = object_masks(frames, scene)
    diff = np.linalg.norm(frames.astype(np.float64) - target, axis=-1)  # [F, H, W]
    keep = ~masks
    return float(np.clip(1.0 - diff[keep] / COLOUR_SCALE, 0.0, 1.0).mean())


def temporal_consistency(frames: npt.NDArray[np.uint8], scene: str | None = None) -> float:
    """Mean over consecutive frames of 0.5 * background steadiness + 0.5 * object
    steadiness (same area and colour; 0 if the object appears or vanishes)."""
    masks = object_masks(frames, scene)
    x = frames.astype(np.float64)
    scores = []
    for t in range(len(frames) - 1):
        still = ~(masks[t] | masks[t + 1])
        change = np.linalg.norm(x[t + 1] - x[t], axis=-1)[still]
        background = float(np.clip(1.0 - change / COLOUR_SCALE, 0, 1).mean()) if still.any() else 0.0
        a, b = masks[t].sum(), masks[t + 1].sum()
        if a and b:
            obj = min(a, b) / max(a, b) * _colour_match(x[t][masks[t]].mean(0), x[t + 1][masks[t + 1]].mean(0))
        else:
            obj = 1.0 if a == b else 0.0
        scores.append(0.5 * background + 0.5 * obj)
    return float(np.mean(scores)) if scores else 1.0


# -------------------------------------------------------------------- the Metric classes


class ToySubjectFidelity(Metric):
    name = "toy-subject-fidelity"
    description = "toy world: does the object match the reference's shape and colour (0-1)"
    needs = frozenset({"reference_images"})

    def score(self, sample: EvalSample) -> float:
        return float(subject_scores(_toy_frames(sample), sample).mean())


class ToyMotionFidelity(Metric):
    name = "toy-motion-fidelity"
    description = "toy world: correlation of the object's path with the reference motion (-1..1)"
    needs = frozenset({"motion"})  # a video made without a motion has no reference path

    def score(self, sample: EvalSample) -> float:
        frames = _toy_frames(sample)
        path = centroids(object_masks(frames, _scene(sample)))
        return path_correlation(path, reference_trajectory(sample, len(frames)))


class ToyTextAlignment(Metric):
    name = "toy-text-alignment"
    description = "toy world: is the background the scene the prompt names (0-1)"
    needs = frozenset({"prompt"})

    def score(self, sample: EvalSample) -> float:
        if not sample.prompt:
            raise DVError("toy-text-alignment needs the prompt")
        return text_alignment(_toy_frames(sample), sample.prompt)


class ToyTemporalConsistency(Metric):
    name = "toy-temporal-consistency"
    description = "toy world: steadiness of background and object between frames (0-1)"

    def score(self, sample: EvalSample) -> float:
        return temporal_consistency(_toy_frames(sample), _scene(sample))


METRICS: tuple[type[Metric], ...] = (ToySubjectFidelity, ToyMotionFidelity, ToyTextAlignment, ToyTemporalConsistency)
# The keys `dv demo` and the ablation report, in table order.
DEMO_KEYS: dict[str, type[Metric]] = {
    "subject_fidelity": ToySubjectFidelity,
    "motion_fidelity": ToyMotionFidelity,
    "text_alignment": ToyTextAlignment,
    "temporal_consistency": ToyTemporalConsistency,
}


def score_all(sample: EvalSample) -> dict[str, float]:
    """Every demo key for one sample, rounded for tables."""
    metrics: dict[str, Metric] = {
        "subject_fidelity": ToySubjectFidelity(),
        "motion_fidelity": ToyMotionFidelity(),
        "text_alignment": ToyTextAlignment(),
        "temporal_consistency": ToyTemporalConsistency(),
    }
    return {key: round(metric.score(sample), 4) for key, metric in metrics.items()}
