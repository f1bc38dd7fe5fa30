"""The random streams of a learning run: a torch generator on the run's device (which photos,
timesteps and noise each step draws) and a numpy generator (which clip, window and guide
frame). Both are saved with the run's state, so a resumed run draws what it would have drawn.

Each rank of a distributed run draws from its own streams, derived from the run's seed and
its rank; rank 0's are the single-process run's, so one process learns exactly as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s streams: the run's own on rank 0, independent ones elsewhere."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0] % 2**31)


class RandomStreams:
    def __init__(self, device: torch.device, seed: int, rank: int = 0) -> None:
        own = rank_seed(seed, rank)
        self.torch = torch.Generator(device=device).manual_seed(own)
        self.numpy = np.random.default_rng(own)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The streams' positions: a tensor and a JSON-able value (the keys runs have always used)."""
        return {"rng.generator": self.torch.get_state()}, {"numpy_rng": self.numpy.bit_generator.state}

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.torch.set_state(tensors["rng.generator"].to(torch.uint8).cpu())
        if "numpy_rng" in meta:  # a subject run of an earlier release saved no numpy stream (it used none)
            self.numpy.bit_generator.state = meta["numpy_rng"]
