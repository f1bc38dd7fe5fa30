"""Reading photos and clips, sampling frames, writing videos and previews.

Everything here works on numpy arrays and PIL images; the engine turns them into
tensors. Any problem a user can cause (a missing folder, a corrupt photo, a clip
no decoder understands) becomes a `DVError` that names the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image, ImageDraw, ImageFont, ImageOps

from dreamvideo_cli.errors import DVError

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "ClipInfo",
    "contact_sheet",
    "dataset_digest",
    "frame_stride",
    "list_clips",
    "load_masks",
    "load_photo",
    "load_photos",
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

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
    }
)
# .gif is a clip, not a photo: a subject folder holding an animated GIF is more
# likely a mistake than a still, and a motion folder of GIFs is a real use.
VIDEO_SUFFIXES: frozenset[str] = frozenset(
    {
        ".mp4",
        ".avi",
        ".mov",
        ".webm",
        ".mkv",
        ".m4v",
        ".gif",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".3gp",
    }
)
CAPTIONS_FILE = "captions.txt"

UInt8Array = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]


# ---------------------------------------------------------------- helpers


def _natural_key(path: Path) -> tuple[Any, ...]:
    """Sort key that puts clip2 before clip10."""
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _visible_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Non-hidden regular files directly in `folder` whose suffix is listed."""
    wanted = set(suffixes)
    try:
        files = [
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and p.suffix.lower() in wanted and p.is_file()
        ]
    except OSError as exc:
        raise DVError(f"cannot list {folder}: {_reason(exc)}", "check its permissions") from None
    return sorted(files, key=_natural_key)


def _check_folder(folder: Path, what: str, hint: str) -> None:
    """Raise a DVError when `folder` is missing or not a directory."""
    if not folder.exists():
        raise DVError(f"{what} folder {folder} does not exist", hint)
    if not folder.is_dir():
        raise DVError(f"{folder} is not a folder", hint)


def _reason(exc: BaseException) -> str:
    """A short human reason from an exception (decoders raise terse ones)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _atomic_target(path: Path) -> Path:
    """A fresh temp file next to `path` (same filesystem, so rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp creates 0600; a video or PNG for the user gets the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def _commit(tmp: Path, path: Path) -> None:
    """fsync then rename `tmp` onto `path`, so readers see the old or the new file."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp path; on success it replaces `path`, on error it is removed."""
    tmp = _atomic_target(path)
    try:
        yield tmp
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _heif_opener() -> bool:
    """Register pillow-heif if it is installed (phones save HEIC); say whether it is."""
    try:
        module = importlib.import_module("pillow_heif")
    except ImportError:
        return False
    module.register_heif_opener()
    return True


# ---------------------------------------------------------------- photos


def _to_rgb8(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, compositing transparency on white."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's own convert("L") clips 16-bit values instead of scaling them.
        arr = np.asarray(img).astype(np.float64)
        arr = np.clip(arr, 0, 65535) / 257.0
        img = Image.fromarray(np.round(arr).astype(np.uint8), "L")
    elif mode == "F":
        arr = np.asarray(img).astype(np.float64)
        scale = 255.0 if np.nanmax(arr) <= 1.0 else 1.0
        arr = np.nan_to_num(arr * scale)
        img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")
    elif mode in ("PA", "RGBa", "LA", "La") or "transparency" in img.info:
        # P/L/RGB images can carry a transparent colour key instead of an alpha band.
        img = img.convert("RGBA")

    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode == "RGB":
        return img
    return img.convert("RGB")


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Apply an embedded ICC profile (phones shoot Display P3; CMYK JPEGs need theirs)."""
    if not icc or img.mode not in ("RGB", "CMYK"):
        return img
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:
        # A broken profile, or one for another colour space, is not worth refusing a photo over.
        return img
    return out if out is not None else img


def load_photo(path: str | os.PathLike[str]) -> Image.Image:
    """Load one photo as 8-bit sRGB, upright per EXIF, transparency on white."""
    path = Path(path)
    if path.suffix.lower() in (".heic", ".heif"):
        _heif_opener()
    try:
        with Image.open(path) as opened:
            opened.load()
            icc = opened.info.get("icc_profile")
            img: Image.Image = opened
            # Corrupt EXIF is common in edited photos; the pixels are still good.
            with contextlib.suppress(Exception):
                img = ImageOps.exif_transpose(opened) or opened
            if img.mode == "CMYK":
                out = _to_rgb8(_to_srgb(img, icc))
            else:
                out = _to_srgb(_to_rgb8(img), icc)
            out.load()
    except FileNotFoundError:
        raise DVError(f"photo {path} does not exist", "check the path") from None
    except Image.DecompressionBombError as exc:
        raise DVError(f"cannot read photo {path}: {_reason(exc)}", "use a smaller image") from None
    except Exception as exc:
        hint = "re-export it as JPEG or PNG, or remove it from the folder"
        if path.suffix.lower() in (".heic", ".heif") and not _heif_opener():
            hint = "convert it to JPEG, or install pillow-heif to read HEIC photos"
        raise DVError(f"cannot read photo {path}: {_reason(exc)}", hint) from None
    # Detach from the file so the caller never sees a lazily-loaded image.
    return out.copy()


def load_photos(
    folder: str | os.PathLike[str],
    *,
    skip_bad: bool = True,
    on_warning: Callable[[str], None] | None = None,
) -> list[tuple[Path, Image.Image]]:
    """Load every photo of a folder (not recursive, natural order) as 8-bit RGB."""
    folder = Path(folder)
    hint = "pass the folder that holds 3-5 photos of the subject"
    _check_folder(folder, "photo", hint)
    paths = _visible_files(folder, IMAGE_SUFFIXES)
    if not paths:
        kinds = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
        nested = any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())
        extra = "; photos in sub-folders are not read" if nested else ""
        raise DVError(f"no photos in {folder}", f"add 3-5 photos of the subject ({kinds}){extra}")
    warn = on_warning if on_warning is not None else log.warning
    loaded: list[tuple[Path, Image.Image]] = []
    first_error: DVError | None = None
    for path in paths:
        try:
            loaded.append((path, load_photo(path)))
        except DVError as exc:
            if not skip_bad:
                raise
            first_error = first_error or exc
            reason = exc.message.removeprefix(f"cannot read photo {path}: ")
            warn(f"skipping {path.name}: {reason}")
    if not loaded:
        assert first_error is not None
        raise DVError(
            f"none of the {len(paths)} photos in {folder} could be read ({first_error.message})",
            "re-export them as JPEG or PNG",
        )
    return loaded


# ---------------------------------------------------------------- masks


def _upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of a photo after EXIF rotation, without decoding pixels."""
    with Image.open(path) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _mask_array(path: Path) -> BoolArray:
    """Read one mask image as bool [H, W]: alpha if it has any, else brightness."""
    try:
        with Image.open(path) as opened:
            opened.load()
            img: Image.Image = ImageOps.exif_transpose(opened) or opened
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "L")
            if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
                alpha = img.getchannel("A")
                has_alpha = bool(np.asarray(alpha).min() < 255)
                img = alpha if has_alpha else img.convert("RGB").convert("L")
            if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                values = np.clip(np.asarray(img).astype(np.float64), 0, 65535) / 257.0
            elif img.mode == "F":
                values = np.asarray(img).astype(np.float64) * 255.0
            else:
                values = np.asarray(img.convert("L")).astype(np.float64)
    except Exception as exc:
        raise DVError(f"cannot read mask {path}: {_reason(exc)}", "save masks as PNG") from None
    # 0/1 masks are common in datasets; 0/255 masks saved as JPEG carry noise near 0,
    # so anything brighter than mid-grey is the subject.
    if values.max() <= 1.0:
        return values > 0
    return values >= 127.5


def load_masks(
    mask_folder: str | os.PathLike[str],
    photo_paths: Sequence[str | os.PathLike[str]],
    size: tuple[int, int] | None = None,
) -> list[BoolArray]:
    """One bool [H, W] subject mask per photo, matched by file stem; `size` is (height, width)."""
    folder = Path(mask_folder)
    hint = "pass a folder with one mask per photo, named like the photo (dog1.jpg -> dog1.png)"
    _check_folder(folder, "mask", hint)
    by_stem: dict[str, list[Path]] = {}
    for candidate in _visible_files(folder, IMAGE_SUFFIXES):
        by_stem.setdefault(candidate.stem.lower(), []).append(candidate)

    masks: list[BoolArray] = []
    for photo in map(Path, photo_paths):
        stem = photo.stem.lower()
        found: list[Path] = []
        # Segmentation tools often append "_mask"; accept that when the plain stem is absent.
        for key in (stem, f"{stem}_mask", f"{stem}-mask", f"{stem}.mask"):
            found = [p for p in by_stem.get(key, []) if p.resolve() != photo.resolve()]
            if found:
                break
        if not found:
            raise DVError(
                f"no mask for photo {photo.name} in {folder}",
                f"add {photo.stem}.png (white = subject, black = background)",
            )
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise DVError(f"several masks for photo {photo.name}: {names}", "keep only one")
        mask_path = found[0]
        mask = _mask_array(mask_path)
        try:
            photo_w, photo_h = _upright_size(photo)
        except Exception as exc:
            raise DVError(f"cannot read photo {photo}: {_reason(exc)}", "re-export it") from None
        if mask.shape != (photo_h, photo_w):
            raise DVError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but photo {photo.name} "
                f"is {photo_w}x{photo_h}",
                "make each mask exactly the size of its photo",
            )
        if not mask.any():
            raise DVError(
                f"mask {mask_path} is empty (no pixel brighter than mid-grey)",
                "paint the subject white on a black background",
            )
        if size is not None:
            mask = resize_center_crop_mask(mask, size[0], size[1])
        masks.append(mask)
    return masks


# ---------------------------------------------------------------- resizing


def _cover_box(
    src_w: int, src_h: int, height: int, width: int
) -> tuple[float, float, float, float]:
    """Source rectangle that, scaled to (width, height), covers it with a centre crop."""
    if height <= 0 or width <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    scale = max(height / src_h, width / src_w)
    crop_w, crop_h = width / scale, height / scale
    left, top = (src_w - crop_w) / 2.0, (src_h - crop_h) / 2.0
    return (left, top, left + crop_w, top + crop_h)


def resize_center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Resize so the short side covers the target, then take the centre crop."""
    if image.size == (width, height):
        return image.copy()
    box = _cover_box(image.width, image.height, height, width)
    # One resample from the exact source box: no second interpolation, no rounding drift.
    return image.resize((width, height), Image.Resampling.LANCZOS, box=box)


def resize_center_crop_array(frames: UInt8Array, height: int, width: int) -> UInt8Array:
    """`resize_center_crop` for uint8 frames [F, H, W, 3] (or one frame [H, W, 3])."""
    arr = np.asarray(frames)
    if arr.ndim == 3:
        single: UInt8Array = resize_center_crop_array(arr[None], height, width)[0]
        return single
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {arr.dtype} {arr.shape}")
    if arr.shape[1:3] == (height, width):
        return arr.copy()
    out = np.empty((arr.shape[0], height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(arr):
        out[i] = np.asarray(resize_center_crop(Image.fromarray(frame, "RGB"), height, width))
    return out


def resize_center_crop_mask(mask: npt.NDArray[Any], height: int, width: int) -> BoolArray:
    """Resize+centre-crop a bool [H, W] mask with nearest neighbour (same geometry as photos)."""
    arr = np.asarray(mask).astype(bool)
    if arr.ndim != 2:
        raise ValueError(f"expected a [H, W] mask, got shape {arr.shape}")
    if arr.shape == (height, width):
        return arr.copy()
    img = Image.fromarray(arr.astype(np.uint8) * 255, "L")
    box = _cover_box(img.width, img.height, height, width)
    resized = img.resize((width, height), Image.Resampling.NEAREST, box=box)
    return np.asarray(resized) >= 128


# ---------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipInfo:
    """What `probe_clip` learns about a clip; width/height are as displayed (after rotation)."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float


_CLIP_HINT = "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`, or remove it"


@contextlib.contextmanager
def _open_clip(path: Path) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open a clip's first video stream, turning decoder failures into DVErrors."""
    if not path.exists():
        raise DVError(f"clip {path} does not exist", "check the path")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise DVError(f"cannot read clip {path}: {_reason(exc)}", _CLIP_HINT) from None
    try:
        if not container.streams.video:
            raise DVError(f"clip {path} has no video stream", _CLIP_HINT)
        stream = container.streams.video[0]
        # Frame threading makes decoding several times faster on multi-core machines.
        stream.thread_type = "AUTO"
        yield container, stream
    except (av.error.FFmpegError, ValueError) as exc:
        raise DVError(f"cannot decode clip {path}: {_reason(exc)}", _CLIP_HINT) from None
    finally:
        container.close()


def _stream_fps(stream: av.VideoStream) -> float:
    """Best frame-rate guess: average, then guessed, then the time-base rate."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0 and math.isfinite(float(rate)):
            return float(rate)
    return 0.0


def _rotate(arr: UInt8Array, degrees: int) -> UInt8Array:
    """Rotate a decoded frame the way players do (display matrix, counter-clockwise)."""
    k = round(degrees / 90) % 4
    return np.ascontiguousarray(np.rot90(arr, k)) if k else arr


def probe_clip(path: str | os.PathLike[str]) -> ClipInfo:
    """Frames, fps and display size of a clip; decodes to count when the container doesn't say."""
    path = Path(path)
    with _open_clip(path) as (container, stream):
        declared = int(stream.frames or 0)
        fps = _stream_fps(stream)
        rotation = 0
        width, height = stream.width, stream.height
        count = 0
        for frame in container.decode(stream):
            if count == 0:
                rotation = frame.rotation
                width, height = frame.width, frame.height
            count += 1
            if declared > 0:
                break  # the first frame was only needed for rotation and true size
        if count == 0:
            raise DVError(f"clip {path} has no frames", _CLIP_HINT)
        frames = declared if declared > 0 else count
        if fps <= 0.0 and container.duration:
            fps = frames / (container.duration / av.time_base)
    if round(rotation / 90) % 2:
        width, height = height, width
    duration = frames / fps if fps > 0 else 0.0
    return ClipInfo(
        path=path, frames=frames, fps=fps, width=width, height=height, duration_s=duration
    )


def list_clips(folder: str | os.PathLike[str]) -> list[Path]:
    """The video clips directly in a folder, in natural order."""
    folder = Path(folder)
    hint = "pass the folder that holds the motion's clips"
    _check_folder(folder, "clip", hint)
    clips = _visible_files(folder, VIDEO_SUFFIXES)
    if not clips:
        kinds = ", ".join(sorted(s.lstrip(".") for s in VIDEO_SUFFIXES))
        raise DVError(f"no clips in {folder}", f"add one or more short clips ({kinds})")
    return clips


def frame_stride(source_fps: float, target_fps: float) -> int:
    """Source frames to step per sampled frame: max(1, round(source_fps / target_fps))."""
    if target_fps <= 0:
        raise ValueError(f"target fps must be positive, got {target_fps}")
    if not math.isfinite(source_fps) or source_fps <= 0:
        return 1
    return max(1, round(source_fps / target_fps))


def sample_frame_indices(
    num_source_frames: int, count: int, stride: int, rng: np.random.Generator
) -> list[int]:
    """`count` indices `stride` apart from a random start; a too-short clip is looped (wraps to its start)."""
    if num_source_frames <= 0:
        raise ValueError("a clip with no frames cannot be sampled")
    if count <= 0:
        return []
    stride = max(1, int(stride))
    span = (count - 1) * stride + 1
    if span <= num_source_frames:
        start = int(rng.integers(0, num_source_frames - span + 1))
        return [start + i * stride for i in range(count)]
    # Too short: take every stride-th frame from a random offset and play that loop
    # from a random phase, so the motion keeps its speed and the seam is a cut.
    offset = int(rng.integers(0, min(stride, num_source_frames)))
    cycle = list(range(offset, num_source_frames, stride))
    phase = int(rng.integers(0, len(cycle)))
    return [cycle[(phase + i) % len(cycle)] for i in range(count)]


def _decode_selected(
    path: Path, wanted: set[int] | None, height: int | None, width: int | None
) -> tuple[dict[int, UInt8Array], int]:
    """Decode once, keep the frames in `wanted` (None = all); also return how many were decoded."""
    kept: dict[int, UInt8Array] = {}
    last = max(wanted) if wanted else -1
    decoded = 0
    with _open_clip(path) as (container, stream):
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if wanted is None or index in wanted:
                rgb = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
                rgb = _rotate(rgb, frame.rotation)
                if height is not None and width is not None:
                    rgb = resize_center_crop_array(rgb, height, width)
                kept[index] = rgb
            if wanted is not None and index >= last:
                break
    return kept, decoded


def read_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | None,
    height: int | None = None,
    width: int | None = None,
) -> UInt8Array:
    """Frames at `indices` (None = all) as uint8 [F, H, W, 3], resized+centre-cropped if a size is given."""
    path = Path(path)
    if (height is None) != (width is None):
        raise ValueError("give both height and width, or neither")
    if indices is not None:
        indices = [int(i) for i in indices]
        if any(i < 0 for i in indices):
            raise ValueError("frame indices must be non-negative")
        if not indices:
            h, w = (height or 0), (width or 0)
            return np.zeros((0, h, w, 3), dtype=np.uint8)
    wanted = None if indices is None else set(indices)
    kept, decoded = _decode_selected(path, wanted, height, width)
    if decoded == 0:
        raise DVError(f"clip {path} has no frames", _CLIP_HINT)
    if indices is None:
        order = sorted(kept)
    else:
        missing = {i for i in indices if i not in kept}
        if missing:
            # The container promised more frames than it holds (edit lists, truncated
            # files): loop over the real ones, as sample_frame_indices would have.
            remap = {i: i % decoded for i in missing}
            more, _ = _decode_selected(path, set(remap.values()) - set(kept), height, width)
            kept.update(more)
            kept.update({i: kept[j] for i, j in remap.items()})
        order = indices
    frames = [kept[i] for i in order]
    if len({f.shape for f in frames}) > 1:
        # Resolution changes mid-stream happen (screen recordings); unify on the first.
        h, w = frames[0].shape[:2]
        frames = [resize_center_crop_array(f, h, w) for f in frames]
    return np.stack(frames).astype(np.uint8, copy=False)


def read_captions(
    folder: str | os.PathLike[str], clips: Sequence[str | os.PathLike[str]]
) -> dict[Path, str | None]:
    """Caption per clip from `captions.txt` (`name: caption` or `name<TAB>caption`), else `<stem>.txt`."""
    folder = Path(folder)
    table: dict[str, str] = {}
    listing = folder / CAPTIONS_FILE
    if listing.is_file():
        text = listing.read_text(encoding="utf-8-sig", errors="replace")
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, body = line.partition("\t") if "\t" in line else line.partition(":")
            if not sep or not name.strip():
                raise DVError(
                    f"{listing}:{number}: expected `filename: caption`, got {line!r}",
                    "write one `clip.mp4: a caption` per line",
                )
            table[name.strip().lower()] = body.strip()

    captions: dict[Path, str | None] = {}
    for clip in map(Path, clips):
        caption: str | None = table.get(clip.name.lower(), table.get(clip.stem.lower()))
        if caption is None:
            sidecar = clip.with_suffix(".txt")
            if sidecar.is_file() and sidecar.name != CAPTIONS_FILE:
                caption = " ".join(
                    sidecar.read_text(encoding="utf-8-sig", errors="replace").split()
                )
        captions[clip] = caption or None
    return captions


# ---------------------------------------------------------------- writing


def _check_frames(frames: npt.NDArray[Any]) -> UInt8Array:
    """Validate uint8 [F, H, W, 3] frames."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0:
        raise ValueError(f"expected uint8 frames [F>0, H, W, 3], got {arr.dtype} {arr.shape}")
    return arr


def _sidecar(path: Path) -> Path:
    """Where a video's metadata JSON lives: `out.mp4` -> `out.mp4.json`."""
    return path.with_name(path.name + ".json")


def _write_mp4(tmp: Path, frames: UInt8Array, fps: float, comment: str | None) -> None:
    """Encode H.264 yuv420p, padding odd sizes by repeating the last row/column."""
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    # faststart puts the index first so browsers can play the file while it downloads.
    options = {"movflags": "+faststart"}
    with av.open(str(tmp), mode="w", format="mp4", container_options=options) as container:
        if comment is not None:
            container.metadata["comment"] = comment
        stream = container.add_stream(
            "libx264", rate=rate, options={"crf": "18", "preset": "medium"}
        )
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        # Convert with the BT.709 matrix and say so: untagged files are guessed as
        # BT.601 or BT.709 depending on the player and the size, shifting colours.
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        context.color_range = ColorRange.MPEG
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
            )
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))


def _write_gif(tmp: Path, frames: UInt8Array, fps: float, comment: str | None) -> None:
    """Pillow GIF that loops forever (identical consecutive frames get merged by Pillow)."""
    images = [Image.fromarray(f, "RGB") for f in frames]
    extra: dict[str, Any] = {"comment": comment} if comment is not None else {}
    images[0].save(
        tmp,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
        **extra,
    )


def write_video(
    path: str | os.PathLike[str],
    frames: npt.NDArray[Any],
    fps: float,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write uint8 frames [F, H, W, 3] to .mp4 or .gif atomically, with metadata JSON in it and beside it."""
    path = Path(path)
    arr = _check_frames(frames)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    writers = {".mp4": _write_mp4, ".gif": _write_gif}
    if suffix not in writers:
        raise DVError(
            f"cannot write {path.name}: unknown video format {suffix or '(none)'}",
            "use .mp4 or .gif",
        )
    comment = None if metadata is None else json.dumps(metadata, sort_keys=True, default=str)
    sidecar = _sidecar(path)
    temps: list[Path] = []
    try:
        video_tmp = _atomic_target(path)
        temps.append(video_tmp)
        writers[suffix](video_tmp, arr, fps, comment)
        sidecar_tmp: Path | None = None
        if metadata is not None:
            sidecar_tmp = _atomic_target(sidecar)
            temps.append(sidecar_tmp)
            text = json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n"
            sidecar_tmp.write_text(text, encoding="utf-8")
        # Old sidecar out first: a crash at any point then leaves a video whose
        # metadata (sidecar, or else its own comment) describes that very video.
        sidecar.unlink(missing_ok=True)
        _commit(video_tmp, path)
        if sidecar_tmp is not None:
            _commit(sidecar_tmp, sidecar)
    except (av.error.FFmpegError, OSError) as exc:
        hint = "check the disk and the path"
        raise DVError(f"cannot write video {path}: {_reason(exc)}", hint) from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return path


def read_video_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata `write_video` stored: the sidecar JSON first, else the file's comment."""
    path = Path(path)
    sidecar = _sidecar(path)
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            return data
    if not path.is_file():
        return None
    comment: Any = None
    try:
        if path.suffix.lower() == ".gif":
            with Image.open(path) as img:
                comment = img.info.get("comment")
        else:
            with av.open(str(path), mode="r") as container:
                comment = container.metadata.get("comment")
    except Exception:
        return None
    if isinstance(comment, bytes):
        comment = comment.decode("utf-8", errors="replace")
    if not comment:
        return None
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- previews


def _wrap(
    draw: ImageDraw.ImageDraw, text: str, font: Any, width: int, max_lines: int = 3
) -> list[str]:
    """Greedy word wrap to `width` pixels, ending with '...' when it runs out of lines."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += " ..."
    # A single word wider than the sheet is cut rather than overflowing it.
    for i, line in enumerate(lines):
        while len(line) > 1 and draw.textlength(line, font=font) > width:
            line = line[:-4] + "..." if len(line) > 4 else line[:-1]
        lines[i] = line
    return lines


def contact_sheet(
    frames: npt.NDArray[Any], columns: int = 8, max_frames: int = 16, label: str | None = None
) -> Image.Image:
    """A grid of up to `max_frames` evenly spaced frames, with an optional caption strip."""
    arr = _check_frames(frames)
    count = min(len(arr), max(1, max_frames))
    picks = np.unique(np.round(np.linspace(0, len(arr) - 1, count)).astype(int))
    cols = max(1, min(columns, len(picks)))
    rows = math.ceil(len(picks) / cols)
    _, h, w, _ = arr.shape
    gap = 2
    sheet_w = cols * w + (cols - 1) * gap
    grid_h = rows * h + (rows - 1) * gap

    strip: Image.Image | None = None
    if label:
        font = ImageFont.load_default(size=max(10, min(18, sheet_w // 40)))
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        lines = _wrap(measure, label, font, sheet_w - 8)
        ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (11, 2)
        line_h = ascent + descent + 2
        strip = Image.new("RGB", (sheet_w, line_h * len(lines) + 8), (255, 255, 255))
        draw = ImageDraw.Draw(strip)
        for i, line in enumerate(lines):
            draw.text((4, 4 + i * line_h), line, fill=(0, 0, 0), font=font)

    extra = strip.height if strip is not None else 0
    sheet = Image.new("RGB", (sheet_w, grid_h + extra), (255, 255, 255))
    for slot, index in enumerate(picks):
        r, c = divmod(slot, cols)
        sheet.paste(Image.fromarray(arr[index], "RGB"), (c * (w + gap), r * (h + gap)))
    if strip is not None:
        sheet.paste(strip, (0, grid_h))
    return sheet


def save_png(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Save an image as PNG atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    try:
        with _atomic_file(path) as tmp:
            image.save(tmp, format="PNG")
    except OSError as exc:
        raise DVError(
            f"cannot write {path}: {_reason(exc)}", "check the disk and the path"
        ) from None
    return path


def dataset_digest(paths: Iterable[str | os.PathLike[str]]) -> str:
    """`sha256:<hex>` over the files' names and contents, independent of order and location."""
    entries: list[tuple[str, str]] = []
    for path in map(Path, paths):
        try:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise DVError(f"cannot read {path}: {_reason(exc)}", "check the data folder") from None
        entries.append((path.name, digest.hexdigest()))
    total = hashlib.sha256()
    for name, content in sorted(entries):
        # Length-prefixed so that no two different file lists hash the same bytes.
        encoded = name.encode("utf-8", errors="surrogateescape")
        total.update(f"{len(encoded)}:".encode() + encoded + b"\0" + content.encode() + b"\n")
    return f"sha256:{total.hexdigest()}"
