"""The memory levers' options, shared by `dv subject learn`, `dv motion learn`, `dv compose` and
`dv plan` so that a plan's command line is the one a user runs."""

from __future__ import annotations

import typer

FP8 = typer.Option(
    False,
    "--fp8",
    help="Store the frozen denoiser's linear weights as scaled fp8 (e4m3, a scale per output channel): "
    "about half the bf16 bytes, computed in bf16; a small measured error (docs/memory.md).",
)
BLOCKS_TO_SWAP = typer.Option(
    0,
    "--blocks-to-swap",
    min=0,
    help="Keep the frozen weights of the last N blocks in host memory and stream each in just before it "
    "runs: less GPU memory, same results, slower steps.",
)
OFFLOAD_ACTIVATIONS = typer.Option(
    False,
    "--offload-activations",
    help="Keep the activations saved for the backward pass in host memory: less GPU memory, same results.",
)
