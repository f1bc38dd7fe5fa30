"""The units a denoiser family names (`DenoiserFamily.checkpoint_targets`: each DiT block; each
UNet resnet, temporal conv and transformer), the granularity of fp8 storage and block swap."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from dreamvideo_cli.adapters import ParallelAdapter
from dreamvideo_cli.backbone import DenoiserFamily
from dreamvideo_cli.speed import Checkpointed

__all__ = ["family_units", "frozen_modules"]


def _unwrap(module: nn.Module) -> nn.Module:
    while isinstance(module, Checkpointed):
        module = module.module
    return module


def family_units(denoiser: nn.Module, family: DenoiserFamily) -> list[nn.Module]:
    """The modules `family.checkpoint_targets` names, in its order, seen through activation
    checkpointing's wrappers: the same modules with or without `--gradient-checkpointing`."""
    found: list[nn.Module] = []
    for parent, key in family.checkpoint_targets(denoiser):
        found.append(_unwrap(parent[key] if isinstance(key, int) else getattr(parent, key)))
    return found


def frozen_modules(module: nn.Module) -> Iterator[nn.Module]:
    """`module` and its descendants, except the adapters attached inside (a
    `ParallelAdapter`'s `adapter`): they train, or are composed, and stay where they are."""
    yield module
    for name, child in module.named_children():
        if isinstance(module, ParallelAdapter) and name == "adapter":
            continue
        yield from frozen_modules(child)
