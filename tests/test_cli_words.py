"""Words that say what they mean (issue 31, item 10): `dv show` keeps the whole training
config, `dv backbones info` counts every frozen part, the loss plot labels its axes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamvideo_cli.cli import main
from dreamvideo_cli.plots import loss_curve_png, panel_texts
from dv_registry import Registry

try:
    from tests.test_cli_registry import entry
except ImportError:  # tests/ run as rootdir-less modules
    from test_cli_registry import entry  # type: ignore[no-redef,import-not-found]


def test_show_prints_the_whole_training_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DV_HOME", str(tmp_path / "home"))
    training = {f"setting_{i:02d}": f"value-{i:02d}" for i in range(30)}  # ~600 characters
    Registry().add_version("subject", "dog", entry(1, token="<sks>", init_word="dog", training=training))
    assert main(["show", "dog"]) == 0
    shown = capsys.readouterr().out
    assert "setting_29=value-29" in shown and "..." not in shown


def test_backbone_info_counts_the_vae_and_the_text_encoder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones", "info", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for part in ("vae_parameters", "text_encoder_parameters", "appearance_encoder_parameters"):
        assert isinstance(info[part], int) and info[part] > 0, part
    assert main(["backbones", "info", "tiny"]) == 0
    assert f"vae {info['vae_parameters']:,}" in capsys.readouterr().out


def test_the_loss_plot_labels_both_axes() -> None:
    texts = [text for _, text in panel_texts("motion", [1, 2, 3], [0.5, 0.25, 0.2], (60, 30, 700, 290), 0)]
    assert "loss" in texts and "step" in texts and "1" in texts and "3" in texts
    assert texts[0] == "motion: 3 steps, last loss 0.2"
    assert panel_texts("motion", [7], [0.5], (60, 30, 700, 290), 0)[0][1] == "motion: 1 step, last loss 0.5"
    image = Image.open(io.BytesIO(loss_curve_png([("motion", s, 1 / s) for s in range(1, 50)]))).convert("L")
    below = image.crop((60, 320 - 30 + 2, 700, 320))  # the strip under the plot: the step axis's labels
    assert np.asarray(below).min() < 128
