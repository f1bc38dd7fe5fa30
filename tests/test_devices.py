"""A GPU is always named with its index (`cuda:0`), as its tensors name it: code that
compares a tensor's device with the run's (activation offload, placement, the memory
tracker) would otherwise find every tensor elsewhere, since `cuda != cuda:0`."""

from __future__ import annotations

import pytest
import torch

from dreamvideo_cli import runtime
from dreamvideo_cli.distributed import DistributedContext
from dreamvideo_cli.errors import DVError


def test_a_gpu_is_named_with_its_index(monkeypatch: pytest.MonkeyPatch) -> None:
    assert torch.device("cuda") != torch.device("cuda", 0)  # why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for name in ("auto", "cuda", "cuda:0"):
        assert runtime.pick_device(name) == torch.device("cuda", 0), name
        assert DistributedContext.from_environment(name, environ={}).device == torch.device("cuda", 0), name
    assert runtime.pick_device("cuda:1") == torch.device("cuda", 1)
    assert runtime.pick_device("cpu") == torch.device("cpu")


def test_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.pick_device("auto") == torch.device("cpu") == DistributedContext.from_environment(environ={}).device
    with pytest.raises(DVError, match="no CUDA GPU"):
        runtime.pick_device("cuda")
    with pytest.raises(DVError, match="unknown device"):
        runtime.pick_device("gpu7")
