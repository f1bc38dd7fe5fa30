"""The memory levers through the learn and compose commands: block swap and activation offload
learn the same adapters as without them, and all three levers learn and compose on tiny-wan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dreamvideo_cli import media
from dreamvideo_cli.cli import main
from dv_registry import Registry


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    media.write_video(folder / "c0.mp4", np.random.default_rng(1).integers(0, 255, (12, 32, 32, 3), np.uint8), fps=16)
    return folder


def _learn(home: Path, clips: Path, monkeypatch: pytest.MonkeyPatch, *levers: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    monkeypatch.setenv("DV_HOME", str(home))
    args = ["motion", "learn", str(clips), "--name", "wave", "--backbone", "tiny-wan", "--device", "cpu"]
    assert main([*args, "--adapter-steps", "3", "--frames", "5", "--seed", "4", "--save-every", "0", *levers]) == 0
    registry = Registry(home)
    return dict(load(registry.read_file(registry.resolve("wave"), "adapter")))


def test_block_swap_and_activation_offload_learn_the_same_adapters(
    tmp_path: Path, clips: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = _learn(tmp_path / "plain", clips, monkeypatch)
    levers = _learn(tmp_path / "levers", clips, monkeypatch, "--blocks-to-swap", "1", "--offload-activations")
    assert all(torch.equal(plain[k], levers[k]) for k in plain)


def test_every_lever_learns_and_composes(tmp_path: Path, clips: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    levers = ("--fp8", "--blocks-to-swap", "1", "--offload-activations")
    _learn(tmp_path, clips, monkeypatch, *levers)
    out = tmp_path / "out.mp4"
    compose = ["compose", "-", "wave", "a dog", "--device", "cpu", "--sample-steps", "3", "--seed", "1", "-o", str(out)]
    assert main([*compose, "--fp8", "--blocks-to-swap", "1"]) == 0
    assert out.is_file() and out.with_suffix(".png").is_file()
