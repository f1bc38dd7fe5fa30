"""Backbones made of several denoisers (`Expert`, e.g. Wan 2.2 A14B's high- and low-noise
experts), as the engine sees them: which experts a learning run gives adapters
(`--experts`), the adapter sites of those experts, the training timesteps restricted to
their ranges, which sites a stored adapter fills, and the expert of each sampling step.

A backbone with one denoiser has no experts (`DenoiserFamily.experts()` is empty): every
function here then returns what it was given, so nothing changes for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from dreamvideo_cli.backbone import AdapterKind, AdapterSite, Backbone, Expert
from dreamvideo_cli.errors import DVError

if TYPE_CHECKING:
    import torch

    from dreamvideo_cli.objectives import Objective

# Draws of the objective's timesteps before giving up on filling a batch from the chosen
# experts' ranges (each draw is a whole batch; an expert covering 1% of the draws fills a
# batch of 8 in a few hundred).
_MAX_DRAWS = 10_000


def chosen_experts(backbone: type[Backbone] | Backbone, kind: AdapterKind, requested: str | None) -> tuple[Expert, ...]:
    """The experts a learning run of `kind` gives adapters and trains on: `requested` (the
    comma-separated names of `--experts`), else the backbone's default for `kind`, else all.
    Empty for a backbone with one denoiser."""
    experts = backbone.family().experts()
    if not experts:
        if requested:
            raise DVError(
                f"--experts {requested}: {backbone.name} has one denoiser, not several experts",
                "leave out --experts",
            )
        return ()
    names = [e.name for e in experts]
    wanted = [n.strip() for n in requested.split(",") if n.strip()] if requested else None
    if wanted is None:
        wanted = list(backbone.default_experts.get(kind, names))
    unknown = [n for n in wanted if n not in names]
    if unknown or not wanted:
        raise DVError(
            f"--experts {requested}: {backbone.name} has no expert {', '.join(unknown) or '(none named)'}",
            f"name some of {','.join(names)}",
        )
    return tuple(e for e in experts if e.name in wanted)


def restricted(all_experts: Sequence[Expert], chosen: Sequence[Expert]) -> tuple[Expert, ...]:
    """The experts whose ranges training timesteps are limited to: none when all are chosen,
    so a run over every expert draws its timesteps exactly as a one-denoiser backbone."""
    return () if set(chosen) == set(all_experts) else tuple(chosen)


def _expert_of(site: AdapterSite, experts: Iterable[Expert]) -> Expert | None:
    return next((e for e in experts if site.path.startswith(f"{e.path}.")), None)


def expert_sites(sites: Sequence[AdapterSite], chosen: Sequence[Expert]) -> list[AdapterSite]:
    """The sites inside the chosen experts (all sites when there are no experts)."""
    if not chosen:
        return list(sites)
    return [s for s in sites if _expert_of(s, chosen) is not None]


def sites_in_state(sites: Sequence[AdapterSite], experts: Sequence[Expert], keys: Iterable[str]) -> list[AdapterSite]:
    """The sites of the experts a stored adapter has tensors for (its tensors are named by
    site path), so compose attaches each expert's set to that expert and leaves the others
    bare. Without experts: all sites, and a mismatch is the adapter set's own error."""
    if not experts:
        return list(sites)
    stored = list(keys)
    present = [e for e in experts if any(k.startswith(f"{e.path}.") for k in stored)]
    return expert_sites(sites, present) if present else list(sites)


def in_ranges(model_timesteps: torch.Tensor, experts: Sequence[Expert]) -> torch.Tensor:
    """A bool mask of the model timesteps that one of `experts` denoises."""
    import torch

    inside = torch.zeros_like(model_timesteps, dtype=torch.bool)
    for e in experts:
        mask = torch.ones_like(inside)
        if e.start is not None:
            mask &= model_timesteps >= e.start
        if e.end is not None:
            mask &= model_timesteps < e.end
        inside |= mask
    return inside


def sample_timesteps(
    objective: Objective, experts: Sequence[Expert], n: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """n training timesteps from the objective's own distribution, conditioned on the chosen
    experts' ranges (draws outside are discarded, so within them the distribution is the
    objective's), as musubi-tuner and diffusion-pipe train each expert on its side of the
    boundary. No experts: the objective's draw, unchanged."""
    import torch
    from torch._subclasses.fake_tensor import is_fake

    first = objective.sample_timesteps(n, generator, device)
    if not experts or is_fake(first):  # dv plan's fake tensors have shapes, no values to keep
        return first
    kept: list[torch.Tensor] = []
    have = 0
    t = first
    for _ in range(_MAX_DRAWS):
        t = t[in_ranges(objective.model_timestep(t), experts)]
        kept.append(t)
        have += len(t)
        if have >= n:
            return torch.cat(kept)[:n]
        t = objective.sample_timesteps(n, generator, device)
    ranges = ", ".join(f"{e.name} ({e.describe_range()})" for e in experts)
    raise DVError(f"the objective's timesteps almost never fall in {ranges}", "train on more experts (--experts)")


def running_expert(experts: Sequence[Expert], timestep: torch.Tensor) -> Expert | None:
    """The expert that denoises a sampling step at `timestep` (a scheduler's, one value): the
    one on the GPU for that step, and whose guidance it takes; None for a backbone without
    experts. A timestep without a value (dv plan's fake tensors) is the first expert's, as
    families route it."""
    from torch._subclasses.fake_tensor import is_fake

    if not experts:
        return None
    if is_fake(timestep):
        return experts[0]
    value = float(timestep)
    return next((e for e in experts if e.holds(value)), None)
