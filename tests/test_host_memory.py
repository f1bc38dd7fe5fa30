"""On a GPU every frozen part loads to host memory first (`memory.placement`): a machine
without room for them is told before loading, in one line, instead of the system stopping
the run while it loads."""

from __future__ import annotations

import pytest
import torch

from dreamvideo_cli.plan import limits
from dreamvideo_cli.plan.planner import _frozen_bytes
from dreamvideo_cli.plan.world import frozen_modules
from dreamvideo_cli.testing import TinyBackbone


@pytest.mark.parametrize("backbone_name", ["tiny", "tiny-wan"])
def test_the_bytes_loaded_are_those_of_the_real_parts(backbone_name: str) -> None:
    from dreamvideo_cli.plugins import get_backbone

    backbone = get_backbone(backbone_name)()
    for dtype in (torch.float32, torch.bfloat16):
        real = backbone.load("cpu", dtype)
        on_the_meta_device = limits.loaded_bytes(backbone, dtype)
        assert on_the_meta_device == sum(_frozen_bytes(m) for m in frozen_modules(real)) > 0


def test_a_gpu_run_whose_weights_do_not_fit_the_host_is_told(monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = TinyBackbone()
    need = limits.loaded_bytes(backbone, torch.bfloat16)
    gpu = torch.device("cuda", 0)  # only its type is read: no GPU is touched
    monkeypatch.setattr(limits, "available_memory", lambda: need + 1)
    assert limits.host_memory_warning(backbone, gpu) is None
    line = limits.host_memory_warning(backbone, gpu, processes=2)  # two processes on one machine
    assert line is not None and "\n" not in line and "(2 processes)" in line and "docs/memory.md" in line
    monkeypatch.setattr(limits, "available_memory", lambda: need // 2)
    line = limits.host_memory_warning(backbone, gpu)
    assert line is not None and line.startswith("tiny's weights take about ")
    # A CPU run loads where it computes (the device's own check covers it); an unknown
    # amount of memory says nothing.
    assert limits.host_memory_warning(backbone, torch.device("cpu")) is None
    monkeypatch.setattr(limits, "available_memory", lambda: 0)
    assert limits.host_memory_warning(backbone, gpu) is None


def test_available_memory_is_this_machines() -> None:
    assert 0 < limits.available_memory() <= limits._physical_memory()


def test_the_learn_commands_say_it_before_loading(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dreamvideo_cli import runtime
    from dreamvideo_cli.cli import learn

    monkeypatch.setattr(runtime, "pick_device", lambda device: torch.device("cuda", 0))
    monkeypatch.setattr(limits, "available_memory", lambda: 1024)
    learn._check_host_memory("tiny", "auto", None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "tiny's weights take about" in lines[0]
    learn._check_host_memory("tiny", "auto", "rex-run")  # a resumed run loaded once already
    monkeypatch.setenv("RANK", "1")  # under a launcher, rank 0 says it
    learn._check_host_memory("tiny", "auto", None)
    assert capsys.readouterr().err == ""
