"""Registration through the public hooks, and the architecture built without any weights."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from dreamvideo_cli.cli import main
from dreamvideo_cli.plugins import get_backbone, get_backbones
from dv_modelscope.backbones import ModelScopeBackbone, ZeroscopeBackbone

IDENTITY_PARAMETERS = 12_409_120
MOTION_PARAMETERS = 77_966_496


def test_registered_through_the_entry_point() -> None:
    backbones = get_backbones()
    for name, cls in (("modelscope", ModelScopeBackbone), ("zeroscope", ZeroscopeBackbone)):
        assert backbones[name].item is cls
        assert backbones[name].distribution == "dv-modelscope"
        assert not cls.is_test
    assert get_backbone("modelscope").video_format == ModelScopeBackbone.video_format


def test_registering_imports_no_heavy_library() -> None:
    code = (
        "import sys, dv_modelscope.plugin as p; from dv_modelscope.backbones import ModelScopeBackbone; "
        "p.register_backbones(lambda cls: None); ModelScopeBackbone().video_format; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'open_clip', 'huggingface_hub') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_video_formats_and_schedule() -> None:
    ms, zs = ModelScopeBackbone, ZeroscopeBackbone
    assert (ms.video_format.height, ms.video_format.width, ms.video_format.frames, ms.video_format.fps) == (
        256,
        256,
        32,
        8,
    )
    assert (zs.video_format.height, zs.video_format.width, zs.video_format.frames, zs.video_format.fps) == (
        320,
        576,
        24,
        8,
    )
    for cls in (ms, zs):
        assert cls.appearance_dim == 1024
        assert cls.schedule.as_config() == {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "prediction_type": "epsilon",
        }


@pytest.mark.parametrize("cls", [ModelScopeBackbone, ZeroscopeBackbone])
def test_adapter_sites_on_the_meta_unet(cls: type[ModelScopeBackbone]) -> None:
    from dreamvideo_cli.adapters import adapter_parameter_counts

    backbone = cls()
    unet = backbone.build_denoiser("meta")
    assert next(unet.parameters()).is_meta
    sites = backbone.adapter_sites(unet)
    widths = Counter((s.kind, s.width) for s in sites)
    assert widths == {
        ("identity", 320): 5, ("identity", 640): 5, ("identity", 1280): 6,
        ("motion", 320): 5, ("motion", 640): 5, ("motion", 1280): 6, ("motion", 512): 1,
    }  # fmt: skip
    assert [s.path for s in sites if s.width == 512] == ["transformer_in.transformer_blocks.0"]
    counts = adapter_parameter_counts(sites, cls.appearance_dim)
    assert (counts["identity"], counts["motion"]) == (IDENTITY_PARAMETERS, MOTION_PARAMETERS)


def test_backbones_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones", "info", "modelscope", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"]["identity"] == IDENTITY_PARAMETERS
    assert data["parameters"]["motion"] == MOTION_PARAMETERS
    assert len(data["identity_sites"]) == 16 and len(data["motion_sites"]) == 17
    assert data["unet_parameters"] == 1_411_233_860


def test_adapters_learnt_under_the_old_hub_id_fit_the_same_commit_under_the_new_one() -> None:
    from dreamvideo_cli.backbone import Fingerprint

    old = Fingerprint("modelscope", "damo-vilab/text-to-video-ms-1.7b", "8227dddca75a8561bf858d604cc5dae52b954d01")
    new = Fingerprint("modelscope", "ali-vilab/text-to-video-ms-1.7b", "8227dddca75a8561bf858d604cc5dae52b954d01")
    other_commit = Fingerprint("modelscope", "ali-vilab/text-to-video-ms-1.7b", "0" * 40)
    assert ModelScopeBackbone.same_weights(old, new) and ModelScopeBackbone.same_weights(new, old)
    assert not ModelScopeBackbone.same_weights(old, other_commit)
    assert not ZeroscopeBackbone.same_weights(old, new)  # Zeroscope has no alias
