"""Reading photos and clips, sampling frames, writing videos and previews.

Everything here works on numpy arrays and PIL images; the engine turns them into
tensors. Any problem a user can cause (a missing folder, a corrupt photo, a clip
no decoder understands) becomes a `DVError` that names the file.

- `photos`: photos and subject masks, and the resize + centre crop every image goes through;
- `clips`: listing, probing and reading clips, and their captions; `decoders` does the
  reading: decord with random access by frame index, PyAV where decord cannot open a file;
- `sampling`: which source frames a training window takes;
- `writing`: mp4 (PyAV) and GIF (Pillow) with their metadata;
- `previews`: contact sheets, PNGs, and the training set's digest.
"""

from __future__ import annotations

from dreamvideo_cli.media.clips import (
    CAPTIONS_FILE,
    VIDEO_SUFFIXES,
    list_clips,
    probe_clip,
    read_captions,
    read_frames,
)
from dreamvideo_cli.media.decoders import ClipInfo, ClipReader, open_clip
from dreamvideo_cli.media.photos import (
    IMAGE_SUFFIXES,
    load_masks,
    load_photo,
    load_photos,
    resize_center_crop,
    resize_center_crop_array,
    resize_center_crop_mask,
)
from dreamvideo_cli.media.previews import contact_sheet, dataset_digest, save_png
from dreamvideo_cli.media.sampling import frame_stride, sample_frame_indices
from dreamvideo_cli.media.writing import read_video_metadata, write_video

__all__ = [
    "CAPTIONS_FILE",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "ClipInfo",
    "ClipReader",
    "contact_sheet",
    "dataset_digest",
    "frame_stride",
    "list_clips",
    "load_masks",
    "load_photo",
    "load_photos",
    "open_clip",
    "probe_clip",
    "read_captions",
    "read_frames",
    "read_video_metadata",
    "resize_center_crop",
    "resize_center_crop_array",
    "resize_center_crop_mask",
    "sample_frame_indices",
    "save_png",
    "write_video",
]
