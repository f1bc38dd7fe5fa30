"""The random streams of a learning run: a torch generator on the run's device (which photos,
timesteps and noise each step draws) and a numpy generator (which clip, window and guide
frame). Both are saved with the run's state, so a resumed run draws what it would have drawn.

Every process of a distributed run holds the same streams and draws the whole global batch
from them, then computes on its own rows of it (`Trainer.rows`): so each process trains on
different photos, windows, timesteps and noise, N processes with batch B learn exactly what
one process with batch N * B learns, and a saved state resumes on any number of processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class RandomStreams:
    def __init__(self, device: torch.device, seed: int) -> None:
        self.torch = torch.Generator(device=device).manual_seed(seed)
        self.numpy = np.random.default_rng(seed)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The streams' positions: a tensor and a JSON-able value (the keys runs have always used)."""
        return {"rng.generator": self.torch.get_state()}, {"numpy_rng": self.numpy.bit_generator.state}

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.torch.set_state(tensors["rng.generator"].to(torch.uint8).cpu())
        if "numpy_rng" in meta:  # a subject run of an earlier release saved no numpy stream (it used none)
            self.numpy.bit_generator.state = meta["numpy_rng"]
