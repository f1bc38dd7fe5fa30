"""Pretrain the toy world's text-to-video backbone on the CPU.

    python -m dv_toyworld.pretrain --seed 0 --steps 3000 --output dv_toyworld/weights/toyworld.safetensors

Each step trains on a batch of 8-frame videos and a batch of single frames (images as
1-frame videos, as video models are trained jointly on both, and as subject learning feeds
photos). Only the seen shapes and motions are rendered; the held-out ones never appear.
The file at --output holds EMA weights and is rewritten every --save-every steps, so a
run stopped early still leaves a usable model; `<out>.train.safetensors` holds what
--resume needs (raw weights, optimizer moments, step, RNG state).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dv_toyworld import model, world


def render_batch(
    rng: np.random.Generator, count: int, frames: int, p_empty: float, gamut: bool = True
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """`count` random clips of the seen world: pixels [B, 3, F, H, W] in [-1, 1], captions,
    and object masks [B, 1, F, H, W]."""
    clips = [world.random_clip(rng, frames=frames, gamut=gamut) for _ in range(count)]
    video = np.stack([c.render() for c in clips])  # [B, F, H, W, 3] uint8
    x = torch.from_numpy(video).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    # An empty caption now and then teaches the unconditional model classifier-free guidance needs.
    captions = ["" if rng.random() < p_empty else world.partial_caption(c, rng) for c in clips]
    masks = torch.from_numpy(np.stack([c.masks() for c in clips])).unsqueeze(1).float()
    return x, captions, masks


def to_latents(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, F, H, W] pixels -> [B, 48, F, H/4, W/4], the space-to-depth "VAE"."""
    b, c, f, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    z = F.pixel_unshuffle(frames, model.LATENT_FACTOR)
    return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4)


def cells(masks: torch.Tensor) -> torch.Tensor:
    """Object masks [B, 1, F, H, W] -> [B, 1, F, H/4, W/4]: 1 where a latent cell holds any object."""
    b, _, f, h, w = masks.shape
    pooled = F.max_pool2d(masks.reshape(b * f, 1, h, w), model.LATENT_FACTOR)
    return pooled.reshape(b, f, 1, h // model.LATENT_FACTOR, w // model.LATENT_FACTOR).permute(0, 2, 1, 3, 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dv_toyworld.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("-o", "--output", dest="out", type=Path, default=model.WEIGHTS_FILE)
    p.add_argument("--videos", type=int, default=3, help="8-frame videos per step")
    p.add_argument("--images", type=int, default=6, help="single frames per step")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--offset-noise", type=float, default=0.1)
    p.add_argument("--p-empty", type=float, default=0.1, help="caption dropout, for guidance")
    p.add_argument(
        "--object-weight",
        type=float,
        default=4.0,
        help="extra loss weight on latent cells the object covers: backgrounds fill 85%% of every frame and are learnt first otherwise",
    )
    p.add_argument("--object-weight-from", type=int, default=0, help="step where object weighting starts")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda; noise and data are drawn on the CPU either way, so a seed gives the same run",
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>.train.safetensors")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this weights file (its EMA weights; a fresh optimizer) instead of random weights",
    )
    p.add_argument(
        "--palette",
        action="store_true",
        help="objects only in the seven vocabulary colours (the first weights' world), not the whole gamut",
    )
    args = p.parse_args(argv)
    command = "python -m dv_toyworld.pretrain " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )

    torch.set_num_threads(args.threads)
    from dreamvideo_cli import quiet_libraries

    quiet_libraries()
    parts = model.build(args.seed)
    init = None
    if args.init is not None:
        model.load_into(args.init, parts)
        init = {"file": args.init.name, "sha256": model.file_digest(args.init)}
    unet, text_encoder, tokenizer = parts["unet"], parts["text_encoder"], parts["tokenizer"]
    device = torch.device(args.device)
    if device.type == "cpu":
        model.attention_for_cpu(unet)
    unet.to(device)
    text_encoder.to(device)
    trainable = [*unet.parameters(), *text_encoder.parameters()]
    ema = [q.detach().clone() for q in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    objective = model.pretraining_objective()  # v-prediction DDPM; model.alphas_cumprod says which levels
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(
        args.seed
    )  # the UNet3D's temporal convolutions use dropout (p = 0.1), drawn from the global generator
    state_path = args.out.with_name(args.out.name.removesuffix(".safetensors") + ".train.safetensors")
    step = 0
    if args.resume:
        step = resume(state_path, trainable, ema, optimizer, rng, gen)
        print(f"resumed at step {step}", flush=True)

    def loss_on(x0: torch.Tensor, captions: list[str], weight: torch.Tensor) -> torch.Tensor:
        # x0: [B, 48, F, 8, 8] latents; v-prediction MSE at a uniform t, as the engine's loss.
        # Noise and t are drawn on the CPU, so a seed gives the same run on any device.
        b = x0.shape[0]
        ids = tokenizer(
            captions, padding="max_length", max_length=model.MAX_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids
        context = text_encoder(ids.to(device))[0]  # [B, 16, 64]
        noise = torch.randn(x0.shape, generator=gen)
        noise += args.offset_noise * torch.randn((b, x0.shape[1], 1, 1, 1), generator=gen)
        noise = noise.to(device)
        t = objective.sample_timesteps(b, gen, torch.device("cpu")).to(device)
        xt = objective.add_noise(x0, noise, t)  # [B, 48, F, 8, 8]
        v = objective.target(x0, noise, t)  # v: noise at low t, -image at high t
        pred = unet(xt, t, encoder_hidden_states=context).sample  # ToyUNet: v from an x0-predicting UNet
        return (weight * (pred - v) ** 2).mean()  # weight: [B, 1, F, 8, 8], 1 off the object

    started, last = time.time(), time.time()
    while step < args.steps:
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        gamut = not args.palette
        videos, video_captions, video_masks = render_batch(
            rng, args.videos, world.FRAMES, args.p_empty, gamut
        )  # [Bv, 3, 8, 32, 32]
        images, image_captions, image_masks = render_batch(
            rng, args.images, 1, args.p_empty, gamut
        )  # [Bi, 3, 1, 32, 32]
        k = args.object_weight if step >= args.object_weight_from else 0.0
        loss_video = loss_on(to_latents(videos).to(device), video_captions, (1 + k * cells(video_masks)).to(device))
        loss_image = loss_on(to_latents(images).to(device), image_captions, (1 + k * cells(image_masks)).to(device))
        loss = loss_video + loss_image
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        step += 1
        # EMA with a short memory at first, so early checkpoints are not mostly the random init.
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, q in zip(ema, trainable, strict=True):
                e.lerp_(q.detach(), 1 - decay)
        if step % args.log_every == 0:
            now = time.time()
            rate = args.log_every / (now - last)
            last = now
            print(
                f"step {step}/{args.steps} loss {loss.item():.4f} (video {loss_video.item():.4f} image {loss_image.item():.4f})"
                f" lr {lr:.2e} {rate:.2f} steps/s {now - started:.0f}s",
                flush=True,
            )
        if step % args.save_every == 0 or step == args.steps:
            save_ema(args.out, parts, trainable, ema, step, args, command, time.time() - started, init)
            save_state(state_path, trainable, ema, optimizer, rng, gen, step)
            print(f"saved {args.out} at step {step}", flush=True)
    return 0


def save_ema(
    out: Path,
    parts: dict[str, Any],
    trainable: list[torch.Tensor],
    ema: list[torch.Tensor],
    step: int,
    args: argparse.Namespace,
    command: str,
    seconds: float,
    init: dict[str, str] | None = None,
) -> None:
    """Swap the EMA weights in, write the file (and its JSON), swap the raw weights back."""
    with torch.no_grad():
        raw = [q.detach().clone() for q in trainable]
        for q, e in zip(trainable, ema, strict=True):
            q.copy_(e)
        meta = {
            "command": command,
            "seed": str(args.seed),
            "step": str(step),
            "steps": str(args.steps),
            "seconds": f"{seconds:.0f}",
            "torch": torch.__version__,
        }
        model.save(out, parts, meta)
        for q, r in zip(trainable, raw, strict=True):
            q.copy_(r)
    info = {
        **meta,
        "file": out.name,
        "sha256": model.file_digest(out),
        "bytes": out.stat().st_size,
        "unet_config": model.unet_config(),
        "held_out_shapes": list(world.HELD_OUT_SHAPES),
        "held_out_motions": list(world.HELD_OUT_MOTIONS),
        "held_out_colours": {} if args.palette else world.HELD_OUT_COLOURS,
        "init": init,
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")


def save_state(
    path: Path,
    trainable: list[torch.Tensor],
    ema: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    gen: torch.Generator,
    step: int,
) -> None:
    from safetensors.torch import save_file

    from dv_registry.fsutil import atomic_path

    tensors: dict[str, torch.Tensor] = {"gen": gen.get_state(), "dropout": torch.get_rng_state()}
    for i, (q, e) in enumerate(zip(trainable, ema, strict=True)):
        tensors[f"param.{i}"] = q.detach().cpu().contiguous()
        tensors[f"ema.{i}"] = e.cpu().contiguous()
        st = optimizer.state.get(q, {})  # type: ignore[call-overload]
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                tensors[f"{key}.{i}"] = st[key].cpu().contiguous()
    meta = {"step": str(step), "rng": json.dumps(rng.bit_generator.state)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def resume(
    path: Path,
    trainable: list[torch.Tensor],
    ema: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    gen: torch.Generator,
) -> int:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    step = int(meta["step"])
    with torch.no_grad():
        for i, (q, e) in enumerate(zip(trainable, ema, strict=True)):
            q.copy_(tensors[f"param.{i}"])
            e.copy_(tensors[f"ema.{i}"])
            if f"exp_avg.{i}" in tensors:
                optimizer.state[q] = {  # type: ignore[index]
                    "step": torch.tensor(float(step)),
                    "exp_avg": tensors[f"exp_avg.{i}"].to(q.device),
                    "exp_avg_sq": tensors[f"exp_avg_sq.{i}"].to(q.device),
                }
    rng.bit_generator.state = json.loads(meta["rng"])
    gen.set_state(tensors["gen"])
    if "dropout" in tensors:  # files written before dropout's generator was saved lack it
        torch.set_rng_state(tensors["dropout"])
    return step


if __name__ == "__main__":
    raise SystemExit(main())
