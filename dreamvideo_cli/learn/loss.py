"""The training loss every DreamVideo stage minimises (paper Eq. 2-4): the backbone's own
diffusion objective on clean latents, with the authors' offset noise and subject masks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dreamvideo_cli.backbone import Components, Expert
from dreamvideo_cli.experts import sample_timesteps


def diffusion_loss(
    parts: Components,
    x0: torch.Tensor,
    context: torch.Tensor,
    generator: torch.Generator,
    offset_noise: float,
    mask: torch.Tensor | None = None,
    model: nn.Module | None = None,
    rows: slice | None = None,
    experts: Sequence[Expert] = (),
) -> torch.Tensor:
    """The backbone's training loss on clean latents x0 [B, C, F', h, w] (DDPM epsilon or
    v, or rectified flow: `parts.objective`), optionally multiplied by a 0/1 mask
    [B, 1 or C, F', h, w] as the authors do for subjects. `model` is the denoiser or a
    wrapper of it (compiled, sharded).

    `rows` is this process's share of a global batch (data parallel): the noise and the
    timesteps are drawn for the whole batch, as one process would draw them, and the loss is
    computed on these rows only.

    `experts`: draw the timesteps within these experts' ranges only (a run that trains some
    of a backbone's experts); empty: the objective's whole range."""
    objective = parts.objective
    b, c = x0.shape[:2]
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    if offset_noise:
        # One offset per video and channel, shared by every frame and position.
        noise = noise + offset_noise * torch.randn((b, c, 1, 1, 1), generator=generator, device=x0.device)
    t = sample_timesteps(objective, experts, b, generator, x0.device)
    if rows is not None:
        x0, noise, t, context = x0[rows], noise[rows], t[rows], context[rows]
        mask = mask[rows] if mask is not None else None
    xt = objective.add_noise(x0, noise, t)
    pred = parts.denoise(xt.to(parts.dtype), objective.model_timestep(t), context, model)
    se = (pred.float() - objective.target(x0, noise, t).float()) ** 2
    if mask is not None:
        se = se * mask
    return se.mean()
