"""dreamvideo_cli.distributed on real processes: torchrun starts two workers on the CPU with
gloo (tests/distributed_worker.py) and they are compared with the same code run here in one
process. The rendezvous takes a free port (--standalone); every launch has a time limit and
its whole process group is killed when it runs over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from dreamvideo_cli.distributed import (
    DistributedContext,
    average_gradients,
    broadcast_parameters,
    launched,
    max_divergence,
)
from dreamvideo_cli.errors import DVError

WORKER = Path(__file__).with_name("distributed_worker.py")
TOLERANCE = 1e-5  # float32, as issue 27 asks of 2 processes against 1


def _torchrun(arguments: list[str], scenario: str, out: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"  # torchrun sets it anyway; set it to skip its warning
    command = [sys.executable, "-m", "torch.distributed.run", "--monitor-interval", "0.2", *arguments]
    # A session of its own, so that a launch that runs over is killed with its workers.
    return subprocess.Popen(
        [*command, str(WORKER), scenario, str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(process: subprocess.Popen[str], deadline: float) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun ran over its time:\n{output[-4000:]}")
    return process.returncode, output


def launch(scenario: str, out: Path, timeout: float = 240) -> tuple[int, float, str]:
    """torchrun with 2 CPU processes, rendezvous on a free port; (exit status, seconds, output)."""
    start = time.monotonic()
    status, output = _finish(_torchrun(["--standalone", "--nproc-per-node", "2"], scenario, out), start + timeout)
    return status, time.monotonic() - start, output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read(out: Path, name: str, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    return load_file(out / f"{name}.rank{rank}.safetensors"), json.loads((out / f"{name}.rank{rank}.json").read_text())


pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("distributed")
    status, _, output = launch("learn", out)
    assert status == 0, output[-4000:]
    return out


@pytest.fixture(scope="module")
def one_process() -> dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """The worker's learning on one process (no launcher) with the whole global batch, per backbone."""
    from tests.distributed_worker import learn

    ctx = DistributedContext.from_environment("cpu", environ={})
    return {backbone: learn(ctx, backbone, None, False) for backbone in ("tiny", "tiny-wan")}


def test_one_process_without_a_launcher() -> None:
    ctx = DistributedContext.from_environment("cpu", environ={})
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    assert not launched({"WORLD_SIZE": "1"}) and launched({"WORLD_SIZE": "2"})
    # Every collective is a no-op on one process.
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    broadcast_parameters([p], ctx)
    average_gradients([p], ctx)
    assert p.grad.tolist() == [2.0, 2.0, 2.0] and max_divergence([p], ctx) == 0.0
    assert ctx.all_ok(True) and not ctx.all_ok(False)
    assert ctx.broadcast_object({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="own"), ctx.fail_together():
        raise ValueError("own error")
    ctx.close()
    with pytest.raises(DVError, match="MASTER_ADDR"):
        DistributedContext.from_environment("cpu", environ={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})


def test_the_ranks_rows_make_the_global_batch() -> None:
    """The trainer's design in one process: two ranks, each drawing the whole batch of 4 from
    the same stream and computing its own rows (`Trainer.rows`), have a mean loss and a mean
    gradient that are one process's on the whole batch."""
    from dreamvideo_cli.learn.loss import diffusion_loss
    from dreamvideo_cli.learn.streams import RandomStreams
    from dreamvideo_cli.testing import TinyBackbone
    from tests.distributed_worker import OFFSET_NOISE, SEED, rows

    parts = TinyBackbone().load(torch.device("cpu"))
    config: Any = parts.denoiser.config
    data = torch.Generator().manual_seed(SEED)
    x0 = torch.randn(4, int(config.in_channels), 4, 8, 8, generator=data)
    offset = torch.nn.Parameter(torch.zeros(int(config.cross_attention_dim)))
    context = torch.randn(4, 8, offset.numel(), generator=data)

    def loss_and_grad(share: slice | None) -> tuple[float, torch.Tensor]:
        stream = RandomStreams(torch.device("cpu"), SEED).torch
        offset.grad = None
        loss = diffusion_loss(parts, x0, context + offset, stream, OFFSET_NOISE, rows=share)
        loss.backward()
        assert offset.grad is not None
        return float(loss.item()), offset.grad.clone()

    whole = loss_and_grad(None)
    shares = [rows(DistributedContext(rank=r, world_size=2), 4) for r in (0, 1)]
    assert shares == [slice(0, 2), slice(2, 4)]
    halves = [loss_and_grad(share) for share in shares]
    assert halves[0][0] != halves[1][0]  # different samples, noise and timesteps
    assert (halves[0][0] + halves[1][0]) / 2 == pytest.approx(whole[0], abs=1e-6)
    assert torch.allclose((halves[0][1] + halves[1][1]) / 2, whole[1], atol=1e-7, rtol=0)


@pytest.mark.slow
def test_context_from_the_launchers_environment(learned: Path) -> None:
    ranks = [read(learned, "context", r)[1] for r in (0, 1)]
    for r, info in enumerate(ranks):
        assert (info["rank"], info["world_size"], info["local_rank"]) == (r, 2, r)
        assert (info["device"], info["backend"], info["is_main"]) == ("cpu", "gloo", r == 0)
        assert info["all_ok_true"] is True and info["all_ok_one_false"] is False  # rank 1's False reaches rank 0
        assert info["broadcast_object"] == "from rank 0"
        assert info["grad_on_one_rank"] == [1.0, 1.0]  # a gradient on rank 1 only: (0 + 2) / 2
        assert info["stopped_at"] == 3  # rank 1 alone asked to stop, at step 3
    # Every rank holds the same stream and draws the whole global batch from it; of a batch
    # of 4, rank 0 computes rows 0-1 and rank 1 rows 2-3.
    assert ranks[0]["stream_draws"] == ranks[1]["stream_draws"]
    assert [ranks[0]["rows"], ranks[1]["rows"]] == [[0, 2], [2, 4]]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "backbone", "sharded"),
    [
        ("unet", "tiny", False),
        ("unet_shard_before", "tiny", True),
        ("unet_shard_after_gc", "tiny", True),
        ("wan_shard_before", "tiny-wan", True),
    ],
)
def test_two_processes_learn_what_one_learns(
    learned: Path, one_process: dict[str, Any], case: str, backbone: str, sharded: bool
) -> None:
    reference, reference_meta = one_process[backbone]
    (tensors, meta), (_, meta1) = read(learned, case, 0), read(learned, case, 1)
    # Rank 0's initial values reached rank 1 (they differed), and after every step the
    # trainables are the same on both ranks, bit for bit.
    assert meta["divergence_before_broadcast"] > 0.1
    assert meta["divergence_after_broadcast"] == 0.0 and meta["divergence_after_steps"] == 0.0
    assert meta["unused_grad_is_none"] and meta1["unused_grad_is_none"]
    assert meta["losses"] == meta1["losses"]
    assert meta["losses"] == pytest.approx(reference_meta["losses"], abs=TOLERANCE)
    # The averaged gradients of step 1 and the adapters after the last step equal one
    # process's on the whole batch.
    assert set(tensors) == set(reference)
    for key, value in reference.items():
        assert torch.allclose(tensors[key], value, atol=TOLERANCE, rtol=0), (key, (tensors[key] - value).abs().max())
    local, full = meta["frozen_bytes"]
    if sharded:
        assert meta["units"] > 0
        assert full == reference_meta["frozen_bytes"][1]
        assert local + meta1["frozen_bytes"][0] <= full * 1.02  # halves, up to dim-0 padding
        assert local < 0.55 * full
    else:
        assert local == full


@pytest.mark.slow
def test_a_failure_on_one_rank_fails_every_rank(tmp_path: Path) -> None:
    status, _, output = launch("fail", tmp_path, timeout=120)
    assert status != 0, output[-4000:]
    assert (tmp_path / "own_error.rank1").exists(), output[-4000:]
    assert (tmp_path / "peer_failed.rank0").exists(), output[-4000:]
    assert not (tmp_path / "committed").exists()


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_run(tmp_path: Path) -> None:
    status, seconds, output = launch("die", tmp_path, timeout=120)
    assert status != 0, output[-4000:]
    assert seconds < 60, output[-4000:]
    assert not (tmp_path / "committed").exists()


@pytest.mark.slow
def test_two_nodes_of_one_process(tmp_path: Path) -> None:
    """Multi-node as torchrun does it: one launcher per node, rendezvous on 127.0.0.1."""
    rendezvous = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "dv-test"]
    rendezvous += ["--rdzv-endpoint", f"127.0.0.1:{_free_port()}"]
    deadline = time.monotonic() + 120
    nodes = [_torchrun([*rendezvous, "--node-rank", str(n)], "context", tmp_path) for n in (0, 1)]
    results = [_finish(node, deadline) for node in nodes]
    for status, output in results:
        assert status == 0, output[-4000:]
    ranks = [read(tmp_path, "context", r)[1] for r in (0, 1)]
    assert [(i["rank"], i["local_rank"], i["world_size"]) for i in ranks] == [(0, 0, 2), (1, 0, 2)]
    assert ranks[1]["broadcast_object"] == "from rank 0"
