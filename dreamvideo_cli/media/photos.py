"""Photos and subject masks, and the resize-then-centre-crop every image and frame goes through.

Photos come back as 8-bit sRGB PIL images, upright per EXIF, transparency on white; masks
as bool [H, W] arrays matched to photos by file stem.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.media._files import BoolArray, UInt8Array, check_folder, reason, visible_files

log = logging.getLogger("dreamvideo_cli.media")

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
            out = _to_rgb8(_to_srgb(img, icc)) if img.mode == "CMYK" else _to_srgb(_to_rgb8(img), icc)
            out.load()
    except FileNotFoundError:
        raise DVError(f"photo {path} does not exist", "check the path") from None
    except Image.DecompressionBombError as exc:
        raise DVError(f"cannot read photo {path}: {reason(exc)}", "use a smaller image") from None
    except Exception as exc:
        hint = "re-export it as JPEG or PNG, or remove it from the folder"
        if path.suffix.lower() in (".heic", ".heif") and not _heif_opener():
            hint = "convert it to JPEG, or install pillow-heif to read HEIC photos"
        raise DVError(f"cannot read photo {path}: {reason(exc)}", hint) from None
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
    check_folder(folder, "photo", hint)
    paths = visible_files(folder, IMAGE_SUFFIXES)
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
        raise DVError(f"cannot read mask {path}: {reason(exc)}", "save masks as PNG") from None
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
    check_folder(folder, "mask", hint)
    by_stem: dict[str, list[Path]] = {}
    for candidate in visible_files(folder, IMAGE_SUFFIXES):
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
            raise DVError(f"cannot read photo {photo}: {reason(exc)}", "re-export it") from None
        if mask.shape != (photo_h, photo_w):
            raise DVError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but photo {photo.name} is {photo_w}x{photo_h}",
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


def _cover_box(src_w: int, src_h: int, height: int, width: int) -> tuple[float, float, float, float]:
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
