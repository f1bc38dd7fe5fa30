"""Issue 31, item 6: data that cannot teach is said so, in one line, before torch loads: a
still clip and photos too small to learn from are refused; 2 photos, an elongated photo,
captions naming clips that are not there and a motion name prompts read badly are warned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamvideo_cli import media
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.learn_inputs import check_motion_data, check_subject_data


def _photos(folder: Path, *sizes: tuple[int, int]) -> Path:
    folder.mkdir()
    for i, (width, height) in enumerate(sizes):
        Image.new("RGB", (width, height), (40 * i, 90, 20)).save(folder / f"{i}.png")
    return folder


def _clip(path: Path, frames: int) -> None:
    video = np.zeros((frames, 32, 32, 3), np.uint8)
    for t in range(frames):
        video[t, 8:16, 2 * t : 2 * t + 8] = 255
    media.write_video(path, video, fps=8)


def test_photos_too_small_to_teach_are_refused(tmp_path: Path) -> None:
    tiny_square = _photos(tmp_path / "a", (300, 300), (300, 300), (16, 16))
    with pytest.raises(DVError, match=r"photo 2.png is 16x16 pixels, too small to teach modelscope"):
        check_subject_data(tiny_square, "dog", "modelscope", None)
    sliver = _photos(tmp_path / "b", (300, 300), (300, 300), (1, 600))
    with pytest.raises(DVError, match="1x600 pixels"):
        check_subject_data(sliver, "dog", "modelscope", None)


def test_few_or_elongated_photos_are_warned(tmp_path: Path) -> None:
    warnings = check_subject_data(_photos(tmp_path / "a", (300, 300), (900, 200)), "dog", "modelscope", None)
    assert len(warnings) == 2
    assert "2 photos" in warnings[0] and "expects 3-5" in warnings[0]
    assert "1.png is 900x200" in warnings[1]
    assert (
        check_subject_data(_photos(tmp_path / "b", (300, 300), (300, 280), (280, 300)), "dog", "modelscope", None) == []
    )


def test_names_backbones_and_masks_are_checked(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "a", (300, 300), (300, 300), (300, 300))
    with pytest.raises(DVError, match="unknown backbone 'modelscop'"):
        check_subject_data(photos, "dog", "modelscop", None)
    with pytest.raises(DVError, match="mask folder"):
        check_subject_data(photos, "dog", "modelscope", tmp_path / "no-masks")
    with pytest.raises(Exception, match="Dog"):
        check_subject_data(photos, "Dog", "modelscope", None)


def test_a_still_clip_is_refused(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    _clip(clips / "walk.mp4", 8)
    _clip(clips / "still.mp4", 1)
    with pytest.raises(DVError, match=r"clip still\.mp4 has 1 frame: a still cannot teach a motion"):
        check_motion_data(clips, "walk", "tiny", "walking")


def test_captions_of_missing_clips_and_unreadable_phrases_are_warned(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    _clip(clips / "walk.mp4", 8)
    (clips / "captions.txt").write_text("wlak.mp4: a dog walking\n")
    warnings = check_motion_data(clips, "wwalk", "tiny", None)
    assert len(warnings) == 2
    assert "captions.txt names wlak.mp4, not a clip" in warnings[0]
    assert 'prompts will name the motion "wwalk"' in warnings[1] and "--phrase" in warnings[1]
    (clips / "captions.txt").write_text("walk.mp4: a dog walking\n")
    assert check_motion_data(clips, "bear-walking", "tiny", None) == []
    assert check_motion_data(clips, "wwalk", "tiny", "walking") == []


@pytest.mark.parametrize("kind", ["subject", "motion"])
def test_a_missing_folder_is_one_line_without_torch(tmp_path: Path, kind: str) -> None:
    script = (
        "import sys\nfrom dreamvideo_cli.cli import main\n"
        f"code = main([{kind!r}, 'learn', 'nowhere', '--name', 'x', '--backbone', 'tiny'])\n"
        "print('torch' in sys.modules, code)\n"
    )
    env = {**os.environ, "DV_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["False", "1"], done.stderr
    assert done.stderr.count("\n") == 1 and "nowhere does not exist" in done.stderr
