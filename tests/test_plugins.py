"""The plugin system: fake plugins registered per test, broken plugins, selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, ClassVar

import pytest

from dreamvideo_cli import plugins
from dreamvideo_cli.backbone import Backbone, Components, DenoiserFamily, Fingerprint, VideoFormat
from dreamvideo_cli.cli import main
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.hookspecs import hookimpl
from dreamvideo_cli.metrics import EvalSample, Metric
from dreamvideo_cli.samplers import Sampler, ddim_scheduler

CLI = [sys.executable, "-c", "from dreamvideo_cli.cli import run; run()"]


class FakeBackbone(Backbone):
    name = "fake-backbone"
    description = "a fake for tests"
    video_format = VideoFormat(64, 96, 4, 4)
    appearance_dim = 8

    @classmethod
    def family(cls) -> DenoiserFamily:
        from dreamvideo_cli.testing import TinyBackbone

        return TinyBackbone.family()

    def build_denoiser(self, device: str = "meta") -> Any:
        from dreamvideo_cli.testing import TinyBackbone

        return TinyBackbone().build_denoiser(device)

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.name, "fake", "0")

    def load(self, device: Any, dtype: Any = None) -> Components:
        raise NotImplementedError


class FakeMetric(Metric):
    name = "fake-metric"
    description = "mean pixel value"
    needs: ClassVar[frozenset[str]] = frozenset({"prompt"})

    def score(self, sample: EvalSample) -> float:
        return float(sample.frames.mean())


class FakePlugin:
    @hookimpl
    def register_backbones(self, register: Any) -> None:
        register(FakeBackbone)

    @hookimpl
    def register_samplers(self, register: Any) -> None:
        register(Sampler("fake-sampler", "a fake", 7, ddim_scheduler))

    @hookimpl
    def register_metrics(self, register: Any) -> None:
        register(FakeMetric)

    @hookimpl
    def register_commands(self, cli: Any) -> None:
        @cli.command("fake-command")
        def fake_command() -> None:
            print("fake command ran")


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_builtins_come_through_the_same_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    names = {p["name"]: p for p in run_json(["plugins", "--json"], capsys)}
    assert names["tiny"]["distribution"] == "dreamvideo"
    assert names["tiny"]["hooks"] == ["register_backbones"]
    assert "register_samplers" in names["samplers"]["hooks"]
    samplers = {s["name"] for s in run_json(["samplers", "--json"], capsys)}
    assert {"ddim", "dpmsolver++", "unipc"} <= samplers
    backbones = {b["name"]: b for b in run_json(["backbones", "--json"], capsys)}
    assert backbones["tiny"]["test_backbone"] is True
    assert backbones["tiny"]["distribution"] == "dreamvideo"


def test_a_fake_plugin_registers_everything(capsys: pytest.CaptureFixture[str]) -> None:
    with plugins.registered(FakePlugin(), "fake"):
        backbones = {b["name"]: b for b in run_json(["backbones", "--json"], capsys)}
        assert (backbones["fake-backbone"]["width"], backbones["fake-backbone"]["height"]) == (96, 64)
        assert backbones["fake-backbone"]["plugin"] == "fake"
        assert {s["name"] for s in run_json(["samplers", "--json"], capsys)} >= {"fake-sampler"}
        metrics = {m["name"]: m for m in run_json(["metrics", "--json"], capsys)}
        assert metrics["fake-metric"]["needs"] == ["prompt"]
        info = run_json(["backbones", "info", "fake-backbone", "--json"], capsys)
        assert info["parameters"]["identity"] > 0 and len(info["motion_sites"]) > 0
        assert info["vae_parameters"] is None  # a backbone that cannot be built without weights
        assert "fake" in {p["name"] for p in run_json(["plugins", "--json"], capsys)}
    assert "fake-backbone" not in plugins.get_backbones()


def test_plugin_commands_are_added(tmp_path: Any) -> None:
    code = (
        "from dreamvideo_cli import plugins\n"
        "from tests.test_plugins import FakePlugin\n"
        "plugins.load_plugins(); plugins.pm.register(FakePlugin(), name='fake')\n"
        "from dreamvideo_cli.cli import main\n"
        "raise SystemExit(main(['fake-command']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr
    assert "fake command ran" in done.stdout


def test_two_plugins_with_one_name_is_an_error() -> None:
    class Twin(FakePlugin):
        pass

    with (
        plugins.registered(FakePlugin(), "one"),
        plugins.registered(Twin(), "two"),
        pytest.raises(DVError, match="registered by both"),
    ):
        plugins.get_backbones()


def test_unknown_names_are_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones", "info", "nope"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: unknown backbone 'nope'") and "tiny" in err


class _BrokenEntryPoint:
    name = "broken"
    dist = None

    def load(self) -> Any:
        raise ImportError("no module named 'missing_dependency'")


def test_a_broken_plugin_warns_and_the_rest_works(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = plugins.importlib.metadata.entry_points
    monkeypatch.setattr(
        plugins.importlib.metadata, "entry_points", lambda group: [*real(group=group), _BrokenEntryPoint()]
    )
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setattr(plugins, "_load_failures", [])
    assert main(["samplers", "--json"]) == 0
    captured = capsys.readouterr()
    assert "ddim" in captured.out
    warnings = [line for line in captured.err.splitlines() if "broken" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "missing_dependency" in warnings[0]

    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setattr(plugins, "_load_failures", [])
    monkeypatch.setenv("DV_STRICT_PLUGINS", "1")
    assert main(["samplers"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: plugin 'broken'") and "Traceback" not in err


def test_dv_load_plugins_selects(tmp_path: Any) -> None:
    env = {**os.environ, "DV_LOAD_PLUGINS": "samplers"}
    done = subprocess.run([*CLI, "plugins", "--json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert [p["name"] for p in json.loads(done.stdout)] == ["samplers"]
    env["DV_LOAD_PLUGINS"] = ""
    done = subprocess.run([*CLI, "backbones", "--json"], capture_output=True, text=True, env=env)
    assert json.loads(done.stdout) == []


def test_starting_the_cli_imports_no_heavy_library() -> None:
    """`dv --help` must stay fast: no torch, diffusers, transformers, pydantic or rich."""
    code = (
        "import sys, io, contextlib\n"
        "from dreamvideo_cli.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'pydantic', 'rich', 'open_clip', 'av') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
