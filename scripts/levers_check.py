"""The memory levers on a real device: a few adapter training steps of a Wan-shaped transformer
(random weights, bf16 frozen weights and autocast on CUDA, float32 on a CPU) plain, with block
swap, with activation offload, with fp8, and all three; checks that swap and offload change no
result and prints each run's peak device memory and time per step.

    uv run python scripts/levers_check.py                       # tiny-wan, cuda if present
    uv run python scripts/levers_check.py --size mid --frames 9 # ~370M-parameter, 8-block Wan

On CUDA the peaks are `torch.cuda.max_memory_allocated`; on a CPU there is none to show (the
run still checks the results). Block swap's host buffers are pinned with cudaHostRegister and
fetched on a side stream; this is where that path runs for real (the tests run it on a CPU).
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from typing import Any

import torch

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.memory.levers import MemoryLevers, apply_levers, store_fp8
from dreamvideo_cli.speed import gradient_checkpointing

MID = {
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "ffn_dim": 8960,
    "num_layers": 8,
}  # 1.3B's blocks, 8 of them


def run(args: argparse.Namespace, levers: MemoryLevers, device: torch.device) -> dict[str, Any]:
    from diffusers import WanTransformer3DModel

    from dv_wan import tiny
    from dv_wan.configs import TRANSFORMER_CONFIGS
    from dv_wan.family import WAN

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = tiny.tiny_transformer_config() if args.size == "tiny" else {**TRANSFORMER_CONFIGS["1.3B"], **MID}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model: Any = WanTransformer3DModel(**config)
    model = model.to(device, dtype).requires_grad_(False).eval()
    parts: Any = type("Parts", (), {"denoiser": model, "family": WAN, "device": device})()
    if levers.fp8:
        store_fp8(parts)
    width = config["num_attention_heads"] * config["attention_head_dim"]
    sites = WAN.adapter_sites(model)
    g = torch.Generator().manual_seed(0)
    adapters = AdapterSet("motion", sites, condition_dim=16, bottleneck=max(8, width // 16))
    with torch.no_grad():
        for p in adapters.parameters():
            p.normal_(std=0.02, generator=g)
    adapters.to(device).attach(model)
    optimizer = torch.optim.AdamW(adapters.parameters(), lr=1e-4)
    latent_frames = (args.frames - 1) // 4 + 1
    x0 = torch.randn(1, 16, latent_frames, args.height // 8, args.width // 8, generator=g).to(device)
    context = torch.randn(1, 64, config["text_dim"], generator=g).to(device, dtype)
    adapters.set_appearance(torch.randn(1, 16, generator=g).to(device))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    losses, times = [], []
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with apply_levers(parts, levers) as applied, gradient_checkpointing(model, WAN, enabled=not args.no_checkpointing):
        pinned = bool(applied.swap and all(b.is_pinned() for b in applied.swap.host_buffers()))
        for step in range(args.steps):
            started = time.perf_counter()
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(step)).to(device)
            with autocast:
                pred = WAN.denoise(
                    model, (0.5 * x0 + 0.5 * noise).to(dtype), torch.tensor([500], device=device), context
                )
                loss = ((pred.float() - (noise - x0)) ** 2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    state = adapters.adapter_state_dict()
    return {"losses": losses, "state": state, "peak": peak, "step_s": min(times), "pinned": pinned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "mid"], default="tiny")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--swap", type=int, default=1, help="blocks to swap")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    runs = {
        "plain": MemoryLevers(),
        f"swap {args.swap}": MemoryLevers(blocks_to_swap=args.swap),
        "offload": MemoryLevers(offload_activations=True),
        "fp8": MemoryLevers(fp8=True),
        "all three": MemoryLevers(fp8=True, blocks_to_swap=args.swap, offload_activations=True),
    }
    results = {name: run(args, levers, device) for name, levers in runs.items()}
    print(f"{args.size} Wan, {args.frames} frames {args.height}x{args.width}, {device}:")
    for name, r in results.items():
        print(f"  {name:<10} peak {r['peak'] / 2**20:9.1f} MiB  step {r['step_s']:.3f} s  losses {r['losses']}")
    plain, fp8 = results["plain"], results["fp8"]
    for name, reference in ((f"swap {args.swap}", plain), ("offload", plain), ("all three", fp8)):
        r = results[name]
        same = r["losses"] == reference["losses"] and all(
            torch.equal(r["state"][k], v) for k, v in reference["state"].items()
        )
        print(f"  {name}: {'identical' if same else 'DIFFERENT'} results; host buffers pinned: {r['pinned']}")


if __name__ == "__main__":
    main()
