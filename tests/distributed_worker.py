"""What tests/test_distributed.py runs in each process that torchrun starts:

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py SCENARIO OUT

Each rank writes OUT/<scenario>.rank<R>.json and .safetensors; the test compares them with
the same functions run in one process (`learn`, with no launcher). Scenarios:
- `context`: the context's answers and collectives (also run first by `learn`).
- `learn`: the context and gradient averaging, then a few AdamW steps of motion adapters on
  the tiny UNet, replicated and sharded (adapters attached before and after sharding, with
  gradient checkpointing), and on the tiny Wan, sharded. As the trainer does, every rank
  draws the whole global batch from the same stream and computes the loss on its own rows.
- `fail`: rank 1 raises inside `fail_together`; both ranks must stop without committing.
- `die`: rank 1 exits at once; rank 0 waits in a collective; the launcher must end the run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import Backbone
from dreamvideo_cli.distributed import (
    DistributedContext,
    PeerFailed,
    average_gradients,
    broadcast_parameters,
    end_process,
    frozen_bytes,
    max_divergence,
    shard_denoiser,
)
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.learn.streams import RandomStreams
from dreamvideo_cli.learn.trainer import Trainer

SEED = 1234
GLOBAL_BATCH = 4
STEPS = 3
# AdamW's first steps move every value by about lr * g / |g|, so a gradient entry that is
# float noise (1e-10, its sign differing between a batch split in two and a whole one) moves
# by up to lr either way: at 1e-4 the adapters of 1 and 2 processes differ by 1.5e-6 after
# 3 steps, while the gradients themselves agree within 1e-8.
LR = 1e-4
N_DATA = 6  # "photos" each step draws GLOBAL_BATCH of
OFFSET_NOISE = 0.1  # the learn configs' default: one more draw from the stream per step
# (name, backbone, sharded: None, "before" or "after" attaching, gradient checkpointing)
LEARN_CASES: tuple[tuple[str, str, str | None, bool], ...] = (
    ("unet", "tiny", None, False),
    ("unet_shard_before", "tiny", "before", False),
    ("unet_shard_after_gc", "tiny", "after", True),
    ("wan_shard_before", "tiny-wan", "before", False),
)


def _backbone(name: str) -> Backbone:
    if name == "tiny":
        from dreamvideo_cli.testing import TinyBackbone

        return TinyBackbone()
    from dv_wan.backbones import TinyWanBackbone

    return TinyWanBackbone()


def rows(ctx: DistributedContext, global_batch: int) -> slice:
    """This rank's rows of a global batch, as the trainer slices them: `Trainer.rows` on a
    trainer that holds only `ctx`."""
    trainer = object.__new__(Trainer)
    trainer.ctx = ctx
    return trainer.rows(global_batch)


def learn(
    ctx: DistributedContext, backbone_name: str, shard: str | None, checkpointing: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """STEPS AdamW steps of motion adapters plus a trainable context offset (standing in for
    the placeholder row: a trainable outside the denoiser) on a global batch of GLOBAL_BATCH
    samples split over the ranks: every rank draws the whole batch (which samples, noise,
    timesteps) from the same stream, seeded SEED, and computes the loss on its own rows."""
    from dreamvideo_cli.speed import gradient_checkpointing

    backbone = _backbone(backbone_name)
    parts = backbone.load(ctx.device)
    denoiser = parts.denoiser
    sites = backbone.adapter_sites(denoiser)
    adapters = AdapterSet.for_backbone("motion", sites, parts.appearance_dim, backbone.adapter_design)
    config: Any = denoiser.config  # a diffusers model's
    tokens, width = 8, int(getattr(config, "cross_attention_dim", None) or config.text_dim)
    offset = nn.Parameter(torch.zeros(width))
    unused = nn.Parameter(torch.zeros(3))  # never in the loss: its gradient must stay None everywhere
    trainables = [*adapters.parameters(), offset, unused]

    # Each rank starts from its own random values (W_up too, so every gradient is non-zero);
    # the broadcast makes them rank 0's.
    g = torch.Generator().manual_seed(SEED + 1 + ctx.rank)
    with torch.no_grad():
        for p in trainables:
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    meta: dict[str, Any] = {"divergence_before_broadcast": max_divergence(trainables, ctx)}
    broadcast_parameters(trainables, ctx)
    meta["divergence_after_broadcast"] = max_divergence(trainables, ctx)

    if shard == "before":
        adapters.attach(denoiser)
    if shard is not None:
        meta["units"] = shard_denoiser(parts, ctx)
    if shard != "before":
        adapters.attach(denoiser)
    meta["frozen_bytes"] = list(frozen_bytes(denoiser))

    # The data set: N_DATA clean latents with their text contexts and appearance embeddings.
    in_channels = int(config.in_channels)
    frames = 3 if backbone_name == "tiny-wan" else 4
    data = torch.Generator().manual_seed(SEED)
    latents = torch.randn(N_DATA, in_channels, frames, 8, 8, generator=data)
    contexts = torch.randn(N_DATA, tokens, width, generator=data)
    appearance = torch.randn(N_DATA, parts.appearance_dim, generator=data)

    stream = RandomStreams(ctx.device, SEED).torch  # the same on every rank
    share = rows(ctx, GLOBAL_BATCH)
    optimizer = torch.optim.AdamW([p for p in trainables if p.requires_grad], lr=LR)
    tensors: dict[str, torch.Tensor] = {}
    losses = []
    for step in range(STEPS):
        index = torch.randint(0, N_DATA, (GLOBAL_BATCH,), generator=stream)  # the whole global batch
        adapters.set_appearance(appearance[index][share])  # this rank's rows, as motion.py sets them
        with gradient_checkpointing(denoiser, family=parts.family, enabled=checkpointing):
            # Noise and timesteps drawn for the whole batch; on one process rows=None, as the
            # trainer passes.
            loss = diffusion_loss(
                parts, latents[index], contexts[index] + offset, stream, OFFSET_NOISE,
                rows=share if ctx.is_distributed else None,
            )  # fmt: skip
            loss.backward()
        average_gradients(trainables, ctx)
        if step == 0:
            tensors.update({f"grad.{n}": p.grad.clone() for n, p in adapters.named_parameters() if p.grad is not None})
            tensors["grad.offset"] = offset.grad.clone() if offset.grad is not None else torch.zeros(0)
            meta["unused_grad_is_none"] = unused.grad is None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        global_loss = loss.detach().reshape(1)
        if ctx.is_distributed:
            torch.distributed.all_reduce(global_loss)
        losses.append(float(global_loss.item()) / ctx.world_size)
    meta["losses"] = losses
    meta["divergence_after_steps"] = max_divergence(trainables, ctx)
    if ctx.is_main:
        # What the trainer saves: the replicated adapters, read on rank 0 as on one device.
        tensors.update({f"final.{k}": v for k, v in adapters.adapter_state_dict().items()})
        tensors["final.offset"] = offset.detach().clone()
    return tensors, meta


def _context_checks(ctx: DistributedContext) -> dict[str, Any]:
    """The context's own answers and the collectives' edge cases."""
    used_on_one = nn.Parameter(torch.zeros(2))
    if ctx.rank == 1:
        used_on_one.grad = torch.full((2,), 2.0)
    average_gradients([used_on_one], ctx)  # the mean over 2 ranks of 0 and 2: 1 on both
    # A stop request seen by rank 1 alone, at step 3, stops every rank at step 3.
    stopped_at = None
    for step in range(10):
        if ctx.any_rank(ctx.rank == 1 and step == 3):
            stopped_at = step
            break
    share = rows(ctx, 4)
    return {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "local_rank": ctx.local_rank,
        "device": str(ctx.device),
        "backend": ctx.backend,
        "is_main": ctx.is_main,
        "all_ok_true": ctx.all_ok(True),
        "all_ok_one_false": ctx.all_ok(ctx.rank != 1),
        "broadcast_object": ctx.broadcast_object(f"from rank {ctx.rank}"),
        "stream_draws": torch.rand(4, generator=RandomStreams(ctx.device, SEED).torch).tolist(),
        "rows": [share.start, share.stop],
        "grad_on_one_rank": used_on_one.grad.tolist() if used_on_one.grad is not None else None,
        "stopped_at": stopped_at,
    }


def _write(out: Path, name: str, rank: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, out / f"{name}.rank{rank}.safetensors")
    (out / f"{name}.rank{rank}.json").write_text(json.dumps(meta))


def main(scenario: str, out: Path) -> None:
    ctx = DistributedContext.from_environment("cpu", timeout=timedelta(seconds=60))
    with ctx:
        if scenario in ("context", "learn"):
            _write(out, "context", ctx.rank, {}, _context_checks(ctx))
        if scenario == "learn":
            for name, backbone_name, shard, checkpointing in LEARN_CASES:
                start = time.perf_counter()
                tensors, meta = learn(ctx, backbone_name, shard, checkpointing)
                meta["seconds"] = time.perf_counter() - start
                _write(out, name, ctx.rank, tensors, meta)
        elif scenario == "fail":
            try:
                with ctx.fail_together("saving"):
                    if ctx.rank == 1:
                        raise ValueError("disk full on rank 1")
            except PeerFailed:
                (out / f"peer_failed.rank{ctx.rank}").write_text("")
                raise
            except ValueError:
                (out / f"own_error.rank{ctx.rank}").write_text("")
                raise
            (out / "committed").write_text("")
        elif scenario == "die":
            if ctx.rank == 1:
                os._exit(3)
            ctx.barrier()  # never completes: rank 1 is gone
            (out / "committed").write_text("")
        elif scenario != "context":
            raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
    end_process(0)  # as dv's entry point ends a launched process
