"""Previews while learning: a short video composed with the adapters as they stand, kept as a
contact sheet in the run folder so a user can watch what is being learnt."""

from __future__ import annotations

from pathlib import Path

from dreamvideo_cli import media
from dreamvideo_cli.backbone import Backbone, Components
from dreamvideo_cli.events import EventHandler, Note
from dreamvideo_cli.learn.run_folder import Run
from dreamvideo_cli.plugins import get_sampler
from dreamvideo_cli.sampling import VideoRequest, sample_video

PREVIEW_STEPS = 10  # sampling steps of a preview: enough to see what is being learnt
PREVIEW_SEED = 0


def write_preview(
    parts: Components,
    backbone: Backbone,
    run: Run,
    label: str,
    prompt: str,
    frames: int,
    on_event: EventHandler,
    release_text: bool = True,
    keep: bool = True,
) -> Path:
    """Compose a short video with the adapters as they stand (attached by the caller) and
    keep its contact sheet as `previews/<label>.png` in the run folder. It draws its noise
    from its own generator and runs without gradients, so training is unchanged by it."""
    fmt, defaults = backbone.video_format, backbone.sampling
    request = VideoRequest(
        prompt, frames, fmt.height, fmt.width, PREVIEW_STEPS, defaults.guidance, get_sampler(defaults.sampler),
        PREVIEW_SEED, expert_guidance=defaults.expert_guidance,
    )  # fmt: skip
    video = sample_video(parts, request, release_text=release_text)
    path = run.folder / "previews" / f"{label}.png"
    if not keep:  # another process of a distributed run keeps it
        return path
    path.parent.mkdir(exist_ok=True)
    media.save_png(media.contact_sheet(video, columns=8, max_frames=16, label=f"{label}: {prompt}"), path)
    on_event(Note(f"preview: {path}"))
    return path
