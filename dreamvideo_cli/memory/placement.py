"""Where a backbone's frozen parts live in a run on a GPU: loaded to host memory, and each
brought to the GPU only while it works, so the card holds the denoiser while it trains or
samples, and the VAE and the appearance encoder only while they encode or decode.

    parts = load_frozen_parts(backbone, device)     # on the host, `parts.staging` set
    use(parts, "codec", "appearance")               # encode the photos or clips
    use(parts, "denoiser")                          # train, or sample
    use(parts, "codec")                             # decode the sampled latents

Each `use` names every part wanted on the GPU; the others go back to the host. A run that
trains some of a backbone's experts (Wan 2.2 A14B) brings only those to the GPU, and sampling
brings each expert for its own steps (unless block swap is applied: it streams them). The text
encoder is not placed here: it comes to the GPU to encode and leaves on `TextEncoding.release`
(textual inversion keeps it there while its token trains), as a large encoder's offload
always did. Frozen weights are never changed, so a part leaving the GPU is a copy, not a
save. Loading to the host first is also what lets fp8 storage (`store_fp8`) and block swap
act before the denoiser reaches the card: a 14B denoiser in bf16 never fits a 24 GB card
whole, even for a moment.

On a CPU the host is the device: `staging` is None and `use` does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from dreamvideo_cli.backbone import Backbone, Components, Expert
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.memory.block_swap import swapping
from dreamvideo_cli.runtime import frozen_dtype, prepare_denoiser

__all__ = ["PartName", "check_backbone_path", "load_frozen_parts", "part_modules", "staged", "use"]

PartName = Literal["denoiser", "codec", "appearance"]
PART_NAMES: tuple[PartName, ...] = get_args(PartName)
HOST = torch.device("cpu")


def load_frozen_parts(backbone: Backbone, device: torch.device) -> Components:
    """The backbone's frozen parts for a run on `device`, prepared (`prepare_denoiser`): on a
    GPU loaded to host memory and staged; on a CPU loaded where they compute."""
    device = torch.device(device)
    try:
        if device.type == "cpu":
            parts = backbone.load(device, frozen_dtype(device))
        else:
            parts = staged(backbone.load(HOST, frozen_dtype(device)), device)
    except OSError as exc:  # a folder the model libraries cannot read: their message, in one line
        if backbone.path is None:
            raise
        reason = " ".join(str(exc).split())
        raise DVError(
            f"--backbone-path {backbone.path} could not be loaded as {backbone.name}: {reason}",
            f"pass a folder of {backbone.name}'s weights in the diffusers layout (docs/backbones.md), or leave it out",
        ) from exc
    prepare_denoiser(parts)
    return parts


def check_backbone_path(path: str | None) -> None:
    """`--backbone-path` names a folder that exists (checked before any run folder is made)."""
    if path is not None and not Path(path).is_dir():
        raise DVError(
            f"--backbone-path {path} is not a folder", "pass a local folder of the backbone's weights, or leave it out"
        )


def staged(parts: Components, device: torch.device) -> Components:
    """Parts loaded to the host, computing on `device`: they wait where they are now, and the
    text encoder comes to `device` for each encoding and leaves after it."""
    parts.text.device, parts.text.offload = device, True
    return replace(parts, device=device, staging=parts.device)


def part_modules(parts: Components, name: PartName) -> list[nn.Module]:
    """The modules of one frozen part: the denoiser, the appearance encoder, or whatever
    modules the codec holds (a VAE)."""
    if name == "denoiser":
        return [parts.denoiser]
    if name == "appearance":
        return [parts.appearance_encoder] if isinstance(parts.appearance_encoder, nn.Module) else []
    return [m for m in vars(parts.codec).values() if isinstance(m, nn.Module)]


def use(parts: Components, *wanted: PartName, experts: Sequence[Expert] = ()) -> None:
    """Staged parts: the `wanted` ones on the compute device, the others on the host. With
    `experts` (a run that trains some of a backbone's experts), only those of the denoiser's
    experts come to the device; the others wait on the host. Adapters attached inside the
    denoiser move with it (they are on the device whenever it is)."""
    if parts.staging is None:
        return
    if swapping(parts.denoiser):  # block swap holds each unit's place: the experts stay as they are
        experts = ()
    away = {id(parts.denoiser.get_submodule(e.path)) for e in parts.family.experts() if experts and e not in experts}
    # The parts leaving first, so the device never holds the old and the new parts at once.
    for name in sorted(PART_NAMES, key=lambda n: n in wanted):
        target = parts.device if name in wanted else parts.staging
        for module in part_modules(parts, name):
            _place(module, target, away if target == parts.device else set(), parts.staging)


def _place(module: nn.Module, target: torch.device, away: set[int], staging: torch.device) -> None:
    """`module` on `target`, but the sub-modules in `away` on `staging`."""
    if id(module) in away:
        target = staging
    elif any(id(m) in away for m in module.modules()):
        module._apply(lambda t: t.to(target), recurse=False)  # its own tensors, then each child,
        leaving = [c for c in module.children() if any(id(m) in away for m in c.modules())]
        for child in [*leaving, *(c for c in module.children() if c not in leaving)]:  # leaving ones first
            _place(child, target, away, staging)
        return
    if any(t.device != target for t in chain(module.parameters(), module.buffers())):
        # nn.Module's own `to`: a diffusers model's override would also warn about the
        # modules it keeps in float32, which move with their dtype unchanged.
        nn.Module.to(module, target)
