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


def loss_curve_png(rows: list[tuple[str, int, float]], width: int = 720, height: int = 320) -> bytes:
    """One panel per stage, raw loss in light colour with a moving average on top."""
    stages: dict[str, list[float]] = {}
    for stage, _, loss in rows:
        stages.setdefault(stage, []).append(loss)
    image = Image.new("RGB", (width, height * len(stages)), "white")
    draw = ImageDraw.Draw(image)
    for panel, (stage, values) in enumerate(stages.items()):
        top = panel * height
        left, right, bottom, ceiling = 60, width - 20, top + height - 30, top + 30
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        draw.rectangle([left, ceiling, right, bottom], outline=(180, 180, 180))
        draw.text((left, top + 8), f"{stage}: {len(values)} steps, last {values[-1]:.4g}", fill="black")
        draw.text((4, ceiling), f"{hi:.3g}", fill="black")
        draw.text((4, bottom - 10), f"{lo:.3g}", fill="black")
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
