"""A loss-curve PNG drawn with Pillow alone (no plotting library to install)."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def panel_texts(
    stage: str, steps: list[int], values: list[float], box: tuple[int, int, int, int], top: int
) -> list[tuple[tuple[float, float], str]]:
    """What a stage's panel says and where: its title, the loss axis (label and range) and
    the step axis (label, first and last step)."""
    left, ceiling, right, bottom = box
    count = "1 step" if len(values) == 1 else f"{len(values)} steps"
    return [
        ((left, top + 8), f"{stage}: {count}, last loss {values[-1]:.4g}"),
        ((4, ceiling - 14), "loss"),
        ((4, ceiling), f"{max(values):.3g}"),
        ((4, bottom - 10), f"{min(values):.3g}"),
        ((left, bottom + 4), str(steps[0])),
        ((right - 6 * len(str(steps[-1])), bottom + 4), str(steps[-1])),
        (((left + right) / 2 - 12, bottom + 4), "step"),
    ]


def loss_curve_png(rows: list[tuple[str, int, float]], width: int = 720, height: int = 320) -> bytes:
    """One panel per stage, raw loss in light colour with a moving average on top; the loss
    on the vertical axis, the step on the horizontal one, both labelled."""
    stages: dict[str, list[float]] = {}
    steps: dict[str, list[int]] = {}
    for stage, step, loss in rows:
        stages.setdefault(stage, []).append(loss)
        steps.setdefault(stage, []).append(step)
    image = Image.new("RGB", (width, height * len(stages)), "white")
    draw = ImageDraw.Draw(image)
    for panel, (stage, values) in enumerate(stages.items()):
        top = panel * height
        left, right, bottom, ceiling = 60, width - 20, top + height - 30, top + 30
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        draw.rectangle([left, ceiling, right, bottom], outline=(180, 180, 180))
        for xy, text in panel_texts(stage, steps[stage], values, (left, ceiling, right, bottom), top):
            draw.text(xy, text, fill="black")
        colour = COLOURS[panel % len(COLOURS)]
        light = tuple(int(c + (255 - c) * 0.7) for c in colour)
        n = max(1, len(values) - 1)
        for series, fill in ((values, light), (_smooth(values, max(1, len(values) // 20)), colour)):
            points = [
                (left + (right - left) * i / n, bottom - (bottom - ceiling) * (v - lo) / span)
                for i, v in enumerate(series)
            ]
            if len(points) > 1:
                draw.line(points, fill=fill, width=2)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
