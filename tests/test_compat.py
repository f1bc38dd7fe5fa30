"""Existing users see no change: the engine reproduces numbers recorded from older code.

tests/fixtures/compat/ was written by tests/fixtures/compat/make_compat.py run against
commit 15d0c68 (before the backbone-contract refactor) with today's tiny tokenizer, a test
double, put in its place; see that file for why and how to regenerate it. These tests call the same functions of that file with today's code: same
inputs, same configs, same seeds, one CPU thread. They require

- every training loss (each step of each stage) within 1e-6 relative of the recorded one,
  and the loss.csv rows the same to the 6 significant figures the engine writes;
- the composed videos (uint8 frames as compose hands them to the writer) byte-identical;
- the stored adapter and token tensors bit-identical (names, dtypes, shapes, sha256);
- entries exported by the old code (`dv export`) importing and composing to the very
  video the old code composed from them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

COMPAT = Path(__file__).parent / "fixtures" / "compat"
LOSS_RTOL = 1e-6
CSV_RTOL = 1e-5  # loss.csv holds 6 significant figures


def _load_maker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dv_make_compat", COMPAT / "make_compat.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


maker = _load_maker()


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((COMPAT / "expected.json").read_text())
    return data


@pytest.fixture(scope="module")
def expected_videos() -> dict[str, np.ndarray]:
    with np.load(COMPAT / "videos.npz") as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    import torch

    home = tmp_path / "dvhome"
    monkeypatch.setenv("DV_HOME", str(home))
    # The old code ran on the first toyworld weights (step 8,000, vocabulary colours only),
    # kept beside the fixtures when the plugin's weights moved on.
    monkeypatch.setenv(
        "DV_TOYWORLD_WEIGHTS", str(Path(__file__).parent / "fixtures" / "toyworld-8000" / "toyworld.safetensors")
    )
    threads = torch.get_num_threads()
    maker.pin_threads()
    yield home
    torch.set_num_threads(threads)


# --- comparisons, each failing with the first difference it finds -----------------------


def check_inputs(got: dict[str, str], want: dict[str, str]) -> None:
    differing = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    assert not differing, (
        f"the generated inputs differ from the recorded ones ({differing}): a library that "
        "writes them (PyAV/libx264, Pillow) changed, not dv; regenerate the fixture with the old code"
    )


def check_losses(where: str, got: dict[str, Any], want: dict[str, Any]) -> None:
    g, w = got["step_losses"], want["step_losses"]
    steps_g, steps_w = [r[:2] for r in g], [r[:2] for r in w]
    assert steps_g == steps_w, f"{where}: logged steps differ: new {steps_g} vs old {steps_w}"
    for (stage, step, loss_g, lr_g), (_, _, loss_w, lr_w) in zip(g, w, strict=True):
        assert math.isclose(loss_g, loss_w, rel_tol=LOSS_RTOL, abs_tol=0.0), (
            f"{where}: first differing loss at {stage} step {step}: new {loss_g!r} vs old {loss_w!r} "
            f"(relative difference {abs(loss_g - loss_w) / abs(loss_w):.3g})"
        )
        assert lr_g is not None and math.isclose(lr_g, lr_w, rel_tol=1e-12), (
            f"{where}: learning rate at {stage} step {step}: new {lr_g!r} vs old {lr_w!r}"
        )
    csv_g, csv_w = got["loss_csv"], want["loss_csv"]
    assert [r[:2] for r in csv_g] == [r[:2] for r in csv_w], f"{where}: loss.csv rows differ"
    for row_g, row_w in zip(csv_g[1:], csv_w[1:], strict=True):
        assert math.isclose(float(row_g[2]), float(row_w[2]), rel_tol=CSV_RTOL), (
            f"{where}: loss.csv at {row_g[0]} step {row_g[1]}: new {row_g[2]} vs old {row_w[2]}"
        )


def check_tensors(where: str, got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want), (
        f"{where}: tensor names differ: only new {sorted(set(got) - set(want))[:5]}, "
        f"only old {sorted(set(want) - set(got))[:5]}"
    )
    layout = [k for k in want if got[k][:2] != want[k][:2]]
    assert not layout, f"{where}: dtype/shape differ for {layout[:5]}: new {got[layout[0]]} vs old {want[layout[0]]}"
    changed = [k for k in want if got[k][2] != want[k][2]]
    assert not changed, f"{where}: {len(changed)} of {len(want)} tensors are not bit-identical, e.g. {changed[:3]}"


def check_video(key: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype == np.uint8 and got.shape == want.shape, (
        f"{key}: new {got.dtype}{got.shape} vs old {want.dtype}{want.shape}"
    )
    if np.array_equal(got, want):
        return
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    frame = int(np.argwhere(diff.reshape(diff.shape[0], -1).max(axis=1) > 0)[0][0])
    pytest.fail(
        f"{key}: video not byte-identical: {int((diff > 0).sum())} of {diff.size} values differ, "
        f"max by {int(diff.max())} levels, first in frame {frame}"
    )


def check_run(
    backbone: str,
    record: dict[str, Any],
    videos: dict[str, np.ndarray],
    expected: dict[str, Any],
    expected_videos: dict[str, np.ndarray],
) -> None:
    want = expected[backbone]
    check_inputs(record["inputs"], want["inputs"])
    for kind in ("subject", "motion"):
        check_losses(f"{backbone} {kind}", record[kind], want[kind])
    # Videos before tensors: a video says how much a difference shows.
    assert sorted(videos) == sorted(want["videos"])
    for key, video in videos.items():
        check_video(key, video, expected_videos[key])
    for kind in ("subject", "motion"):
        check_tensors(f"{backbone} {kind} adapter", record[kind]["adapter"], want[kind]["adapter"])
        assert (record[kind]["token"], record[kind]["phrase"]) == (want[kind]["token"], want[kind]["phrase"])
    check_tensors(
        f"{backbone} token embedding", record["subject"]["token_embedding"], want["subject"]["token_embedding"]
    )


# --- the tests -------------------------------------------------------------------------------


def test_fixture_is_small_and_consistent(expected: dict[str, Any], expected_videos: dict[str, np.ndarray]) -> None:
    assert sum(p.stat().st_size for p in COMPAT.iterdir() if p.is_file()) < 1_000_000
    recorded = {**expected["tiny"]["videos"], **expected["toyworld"]["videos"]}
    assert sorted(recorded) == sorted(expected_videos)
    for key, video in expected_videos.items():
        assert hashlib.sha256(video.tobytes()).hexdigest() == recorded[key], key


@pytest.mark.slow
def test_tiny_learning_and_composing_match_the_old_code(
    home: Path, tmp_path: Path, expected: dict[str, Any], expected_videos: dict[str, np.ndarray]
) -> None:
    record, videos = maker.run_tiny(home, tmp_path / "work")
    check_run("tiny", record, videos, expected, expected_videos)


@pytest.mark.slow
def test_toyworld_learning_and_composing_match_the_old_code(
    home: Path, tmp_path: Path, expected: dict[str, Any], expected_videos: dict[str, np.ndarray]
) -> None:
    record, videos = maker.run_toyworld(home, tmp_path / "work")
    check_run("toyworld", record, videos, expected, expected_videos)


@pytest.mark.slow
def test_entries_exported_by_the_old_code_compose_the_same_videos(
    home: Path, tmp_path: Path, expected_videos: dict[str, np.ndarray]
) -> None:
    from dv_registry import Registry

    registry = Registry(home)
    imported = [m for pack in ("subject.dvpack", "motion.dvpack") for m in registry.import_(COMPAT / pack)]
    assert {m.name for m in imported} == {maker.TINY["subject"], maker.TINY["motion"]}
    videos = maker.compose_tiny(registry, tmp_path)
    for key, video in videos.items():
        check_video(f"{key} (from the imported entries)", video, expected_videos[key])
