"""`dv subject learn` and `dv motion learn` over several processes, for real: torchrun starts
two CPU workers on gloo running the dv command line, and the results are compared with one
process learning the same global batch. Every launch has a time limit; a launch that runs
over is killed with its workers (its own session)."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamvideo_cli import media
from dv_registry import Registry

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5  # float32
LAUNCH_SECONDS = 240


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(DV_HOME=str(home), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def _start(home: Path, dv_args: list[str], launcher: list[str] | None) -> subprocess.Popen[str]:
    """`python -m dreamvideo_cli ...` alone, or under `torchrun <launcher> -m dreamvideo_cli ...`."""
    command = [sys.executable, "-m", "dreamvideo_cli", *dv_args]
    if launcher is not None:
        command = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "dreamvideo_cli", *dv_args]
    return subprocess.Popen(
        command, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _wait(process: subprocess.Popen[str], seconds: float = LAUNCH_SECONDS) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the launch ran over its time:\n{output[-4000:]}")
    return process.returncode, output


def _run(home: Path, dv_args: list[str], processes: int = 1) -> str:
    launcher = ["--standalone", "--nproc-per-node", str(processes)] if processes > 1 else None
    code, output = _wait(_start(home, dv_args, launcher))
    assert code == 0, output[-4000:]
    return output


def _losses(home: Path) -> list[tuple[str, int, float]]:
    (run,) = (home / "runs").iterdir()  # one run folder, whatever the number of processes
    with open(run / "loss.csv") as f:
        return [(r["stage"], int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def _stored(home: Path, name: str) -> dict[str, torch.Tensor]:
    """Every tensor the registry holds for `name` (adapter, and the token for a subject);
    exactly one version must exist."""
    from safetensors.torch import load

    registry = Registry(home)
    assert sorted(registry.tags(name)) == ["latest", "v1"]
    manifest = registry.resolve(name)
    tensors = dict(load(registry.read_file(manifest, "adapter")))
    if manifest.kind == "subject":
        tensors["token"] = load(registry.read_file(manifest, "token_embedding"))["token"]
    return tensors


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= TOLERANCE, worst
    return worst


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(1)
    for i in range(2):
        media.write_video(folder / f"c{i}.mp4", rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), fps=16)
    return folder


def _subject_args(photos: Path, batch: int, *extra: str) -> list[str]:
    return [
        "subject", "learn", str(photos), "--name", "cat", "--backbone", "tiny", "--device", "cpu",
        "--embedding-steps", "3", "--adapter-steps", "3", "--save-every", "0", "--seed", "3",
        "--batch-size", str(batch), *extra,
    ]  # fmt: skip


def _motion_args(clips: Path, batch: int, *extra: str) -> list[str]:
    return [
        "motion", "learn", str(clips), "--name", "wave", "--backbone", "tiny-wan", "--device", "cpu",
        "--adapter-steps", "3", "--frames", "5", "--save-every", "0", "--seed", "4", "--batch-size", str(batch), *extra,
    ]  # fmt: skip


def test_two_processes_learn_the_subject_one_process_learns(tmp_path: Path, photos: Path) -> None:
    _run(tmp_path / "one", _subject_args(photos, 4))
    output = _run(tmp_path / "two", _subject_args(photos, 2, "--json"), processes=2)
    assert output.count('"ref": "cat:v1"') == 1  # one report, from rank 0
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [r[:2] for r in one] == [r[:2] for r in two]
    assert max(abs(a[2] - b[2]) for a, b in zip(one, two, strict=True)) <= TOLERANCE
    _assert_close(_stored(tmp_path / "one", "cat"), _stored(tmp_path / "two", "cat"))


def test_two_processes_learn_the_motion_one_process_learns_and_shard_it(tmp_path: Path, clips: Path) -> None:
    _run(tmp_path / "one", _motion_args(clips, 2))
    _run(tmp_path / "two", _motion_args(clips, 1), processes=2)
    output = _run(tmp_path / "shard", _motion_args(clips, 1, "--shard"), processes=2)
    held, whole = (float(x) for x in output.split("each holds ")[1].split(" MiB")[0].split(" of its "))
    assert held < 0.6 * whole  # each process holds about half the frozen denoiser
    one = _stored(tmp_path / "one", "wave")
    _assert_close(one, _stored(tmp_path / "two", "wave"))
    _assert_close(one, _stored(tmp_path / "shard", "wave"))


def test_shard_needs_several_processes(tmp_path: Path, photos: Path) -> None:
    code, output = _wait(_start(tmp_path, _subject_args(photos, 4, "--shard"), None))
    assert code != 0 and "--shard splits the frozen weights over several processes" in output
    assert "Traceback" not in output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_nodes_of_one_process_learn_what_one_process_learns(tmp_path: Path, photos: Path) -> None:
    _run(tmp_path / "one", _subject_args(photos, 4))
    port, home = _free_port(), tmp_path / "nodes"
    nodes = []
    for rank in range(2):
        launcher = ["--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1"]
        launcher += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
        nodes.append(_start(home, _subject_args(photos, 2), launcher))
    for node in nodes:
        code, output = _wait(node)
        assert code == 0, output[-4000:]
    _assert_close(_stored(tmp_path / "one", "cat"), _stored(home, "cat"))


def _workers(launcher: subprocess.Popen[str]) -> dict[int, int]:
    """The launcher's worker processes, by rank."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == launcher.pid:
            rank = next((int(v[5:]) for v in environ if v.startswith(b"RANK=")), None)
            if rank is not None:
                found[rank] = int(entry.name)
    return found


def _wait_for_training(home: Path, launcher: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + LAUNCH_SECONDS
    while not list(home.glob("runs/*/loss.csv")):
        assert launcher.poll() is None, launcher.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_a_rank_that_dies_fails_the_run_and_commits_nothing(tmp_path: Path, photos: Path) -> None:
    args = _subject_args(photos, 2)
    args[args.index("--embedding-steps") + 1] = "100000"
    launcher = _start(tmp_path, args, ["--standalone", "--nproc-per-node", "2"])
    _wait_for_training(tmp_path, launcher)
    os.kill(_workers(launcher)[1], signal.SIGKILL)
    code, output = _wait(launcher, 60)
    assert code != 0, output[-4000:]
    registry = Registry(tmp_path)
    assert not registry.list() and not registry.verify()  # nothing stored, nothing broken


def test_a_stopped_launch_resumes_where_it_stopped(tmp_path: Path, photos: Path) -> None:
    """SIGTERM to the launcher: every rank stops at the same step and the state is saved
    once; resumed under the launcher, the run ends where an uninterrupted run ends."""
    steps = ["--embedding-steps", "300"]  # the loss log appears at step 10: stopped well before the end
    _run(tmp_path / "one", _subject_args(photos, 4, *steps))
    home = tmp_path / "two"
    launcher = _start(home, _subject_args(photos, 2, *steps), ["--standalone", "--nproc-per-node", "2"])
    _wait_for_training(home, launcher)
    launcher.send_signal(signal.SIGTERM)
    code, output = _wait(launcher, 90)
    assert code != 0 and "state saved in run" in output, output[-4000:]
    (run,) = (home / "runs").iterdir()
    _run(home, ["subject", "learn", "--resume", run.name, "--device", "cpu"], processes=2)
    _assert_close(_stored(tmp_path / "one", "cat"), _stored(home, "cat"))


def test_bench_under_the_launcher_reports_the_scaling(tmp_path: Path) -> None:
    import json

    args = ["bench", "--backbone", "tiny", "--device", "cpu", "--frames", "2", "--repeats", "1"]
    output = _run(tmp_path, [*args, "--only", "subject,motion", "--json"], processes=2)
    report = json.loads(output[output.index("{") : output.rindex("}") + 1])  # rank 0 alone prints
    assert report["processes"] == 2 and set(report["scaling"]) == {"subject step", "motion step"}
    parallel = [r for r in report["results"] if r["processes"] == 2]
    assert [r["path"] for r in parallel] == ["dv, 2 processes"] * 2
    assert all(r["samples_per_second"] > 0 for r in parallel)
