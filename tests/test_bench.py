"""`dv bench` runs on a CPU with the tiny backbone and reports both paths (no timing asserts)."""

from __future__ import annotations

import json

import pytest

from dreamvideo_cli.cli import main


def test_bench_reports_both_paths_for_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "bench",
        "--backbone",
        "tiny",
        "--device",
        "cpu",
        "--frames",
        "2",
        "--repeats",
        "1",
        "--sample-steps",
        "2",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "cpu" and report["frames"] == 2
    seen = {(r["name"], r["path"]) for r in report["results"]}
    for stage in ("subject step", "motion step", "compose"):
        assert {(stage, "eager"), (stage, "dv")} <= seen
        assert report["speedup"][stage] > 0
    for r in report["results"]:
        assert r["seconds_per_step"] > 0
        assert r["fraction_of_peak"] is None  # no known peak for a CPU


def test_bench_rejects_unknown_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--backbone", "tiny", "--only", "warp"]) != 0
    assert capsys.readouterr().err.startswith("error: unknown bench stage 'warp'")
