"""DreamVideo's identity and motion adapters, and attaching them to a diffusers UNet3D.

Paper, Eq. (2), identity adapter on the spatial hidden state h:
    h' = h + GELU(h W_down) W_up
Eq. (3)-(4), motion adapter on the temporal hidden state h with a CLIP image embedding e:
    h^e = h + broadcast(e W_cond)
    h'  = h + GELU(h^e W_down) W_up
W_up starts at zero so the frozen model is unchanged at step 0.

Placement follows the authors' code: an adapter runs *parallel* to a transformer
sub-layer and reads the same pre-LayerNorm hidden state, so a block computes
    x = sublayer(norm(x)) + x + adapter(x)
Identity adapters sit beside the cross-attention (attn2) of every spatial transformer
block; motion adapters beside attn1, attn2 and the feed-forward of every temporal block.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dreamvideo_cli.backbone import AdapterKind, AdapterSite

# (norm, sub-layer) pairs of a diffusers BasicTransformerBlock that get an adapter beside them.
IDENTITY_SLOTS: tuple[tuple[str, str], ...] = (("norm2", "attn2"),)
MOTION_SLOTS: tuple[tuple[str, str], ...] = (("norm1", "attn1"), ("norm2", "attn2"), ("norm3", "ff"))


def slots_for(kind: AdapterKind) -> tuple[tuple[str, str], ...]:
    return IDENTITY_SLOTS if kind == "identity" else MOTION_SLOTS


class IdentityAdapter(nn.Module):
    """Bottleneck d -> d/2 -> d with GELU; returns only the residual branch."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, width // 2)
        self.up = nn.Linear(width // 2, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = 1.0  # compose-time strength; 1.0 is the paper

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: [N, tokens, d] -> [N, tokens, d]
        return self.scale * self.up(F.gelu(self.down(h)))


class AppearanceCondition:
    """The CLIP image embedding shared by every motion adapter for the current forward.

    The UNet's forward signature has no slot for it, so the engine sets it here before
    each call: e is [B, C'] for a UNet batch of B videos (conditional and unconditional
    branches included; the unconditional one gets zeros).
    """

    def __init__(self) -> None:
        self.embedding: torch.Tensor | None = None

    def set(self, embedding: torch.Tensor | None) -> None:
        self.embedding = embedding


class MotionAdapter(nn.Module):
    """Bottleneck with a condition layer C' -> d on the appearance embedding."""

    def __init__(self, width: int, condition_dim: int, condition: AppearanceCondition) -> None:
        super().__init__()
        self.down = nn.Linear(width, width // 2)
        self.up = nn.Linear(width // 2, width)
        self.cond = nn.Linear(condition_dim, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = 1.0
        self.strength = 1.0  # lambda, the appearance-guidance strength
        self._condition = condition

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: [B*height*width, F, d], batch-major, as diffusers' TransformerTemporalModel lays it out
        e = self._condition.embedding
        if e is not None:
            c = self.cond(e.to(self.cond.weight.dtype))  # [B, d]
            per_video = h.shape[0] // c.shape[0]  # height*width positions per video
            c = c.repeat_interleave(per_video, dim=0).unsqueeze(1)  # [B*h*w, 1, d]
            h_e = h + self.strength * c.to(h.dtype)  # Eq. (3): broadcast over frames
        else:
            h_e = h
        return self.scale * self.up(F.gelu(self.down(h_e)))  # Eq. (4) without the skip


class ParallelAdapter(nn.Module):
    """Replaces a block's sub-layer so it returns sublayer(norm(x)) + adapter(x).

    The block's own norm is swapped for an Identity while attached, because the adapter
    must read x before the LayerNorm; `detach` puts both back.
    """

    def __init__(self, norm: nn.Module, sublayer: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.sublayer = sublayer
        self.adapter = adapter

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out: torch.Tensor = self.sublayer(self.norm(hidden_states), *args, **kwargs)
        return out + self.adapter(hidden_states)


def _block_width(block: Any) -> int:
    return int(block.attn1.query_dim)


def find_adapter_sites(unet: nn.Module) -> list[AdapterSite]:
    """Every spatial transformer block with cross-attention (identity) and every temporal
    transformer block (motion) of a diffusers UNet3D, in module order."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    sites: list[AdapterSite] = []
    for name, module in unet.named_modules():
        if isinstance(module, TransformerTemporalModel):
            kind: AdapterKind = "motion"
        elif isinstance(module, Transformer2DModel):
            kind = "identity"
        else:
            continue
        for i, block in enumerate(module.transformer_blocks):
            if kind == "identity" and (block.attn2 is None or block.only_cross_attention):
                continue
            sites.append(AdapterSite(f"{name}.transformer_blocks.{i}", kind, _block_width(block)))
    return sites


def adapter_parameter_count(site: AdapterSite, condition_dim: int | None = None) -> int:
    """Closed form: bottleneck 2*d*h + h + d (h = d // 2), plus (C' + 1) * d per condition layer."""
    d, h = site.width, site.width // 2
    bottleneck = 2 * d * h + h + d
    if site.kind == "identity":
        return bottleneck
    if condition_dim is None:
        raise ValueError("motion adapters need the appearance embedding size")
    return len(MOTION_SLOTS) * (bottleneck + (condition_dim + 1) * d)


def adapter_parameter_counts(sites: Iterable[AdapterSite], condition_dim: int) -> dict[str, int]:
    counts = {"identity": 0, "motion": 0}
    for site in sites:
        counts[site.kind] += adapter_parameter_count(site, condition_dim)
    counts["total"] = counts["identity"] + counts["motion"]
    return counts


def resolve_site(root: nn.Module, path: str) -> nn.Module:
    """The module at a dotted site path, looking through activation-checkpoint wrappers
    (so adapters attach the same way with or without `--gradient-checkpointing`)."""
    from dreamvideo_cli.speed import Checkpointed

    module = root
    for part in path.split("."):
        while isinstance(module, Checkpointed):
            module = module.module
        module = module[int(part)] if isinstance(module, nn.ModuleList) else getattr(module, part)
    while isinstance(module, Checkpointed):
        module = module.module
    return module


def _key(path: str, sublayer: str) -> str:
    # ModuleDict keys cannot contain dots.
    return f"{path}.{sublayer}".replace(".", "__")


class AdapterSet(nn.Module):
    """All adapters of one kind for one UNet, attachable and detachable as a unit.

    Its state dict (`adapter_state_dict`) is keyed by the UNet path of the sub-layer each
    adapter sits beside, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn2.down.weight`.
    """

    def __init__(
        self,
        kind: AdapterKind,
        sites: Iterable[AdapterSite],
        condition_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.kind: AdapterKind = kind
        self.sites = [s for s in sites if s.kind == kind]
        self.condition = AppearanceCondition()
        self.condition_dim = condition_dim
        adapters: dict[str, nn.Module] = {}
        for site in self.sites:
            for _, sublayer in slots_for(kind):
                if kind == "identity":
                    adapters[_key(site.path, sublayer)] = IdentityAdapter(site.width)
                else:
                    if condition_dim is None:
                        raise ValueError("motion adapters need condition_dim")
                    adapters[_key(site.path, sublayer)] = MotionAdapter(
                        site.width, condition_dim, self.condition
                    )
        self.adapters = nn.ModuleDict(adapters)
        # A plain list, not an attribute: nn.Module would adopt the UNet as a submodule.
        self._attached: list[nn.Module] = []

    # -- attaching -------------------------------------------------------------------
    def attach(self, unet: nn.Module) -> AdapterSet:
        if self._attached:
            raise RuntimeError("adapters are already attached")
        for site in self.sites:
            block = resolve_site(unet, site.path)
            for norm_name, sublayer_name in slots_for(self.kind):
                norm, sublayer = getattr(block, norm_name), getattr(block, sublayer_name)
                if isinstance(sublayer, ParallelAdapter):
                    raise RuntimeError(f"{site.path}.{sublayer_name} already has an adapter")
                adapter = self.adapters[_key(site.path, sublayer_name)]
                setattr(block, sublayer_name, ParallelAdapter(norm, sublayer, adapter))
                setattr(block, norm_name, nn.Identity())
        self._attached.append(unet)
        return self

    def detach(self) -> None:
        if not self._attached:
            return
        unet = self._attached.pop()
        for site in self.sites:
            block = resolve_site(unet, site.path)
            for norm_name, sublayer_name in slots_for(self.kind):
                wrapper = getattr(block, sublayer_name)
                assert isinstance(wrapper, ParallelAdapter)
                setattr(block, sublayer_name, wrapper.sublayer)
                setattr(block, norm_name, wrapper.norm)

    # -- knobs -----------------------------------------------------------------------
    def set_scale(self, scale: float) -> None:
        for adapter in self.adapters.values():
            assert isinstance(adapter, IdentityAdapter | MotionAdapter)
            adapter.scale = scale

    def set_strength(self, strength: float) -> None:
        for adapter in self.adapters.values():
            if isinstance(adapter, MotionAdapter):
                adapter.strength = strength

    def set_appearance(self, embedding: torch.Tensor | None) -> None:
        self.condition.set(embedding)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- saving ----------------------------------------------------------------------
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, module in self.adapters.items():
            prefix = key.replace("__", ".")
            for pname, tensor in module.state_dict().items():
                out[f"{prefix}.{pname}"] = tensor.detach().to("cpu", torch.float32).contiguous()
        return out

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.adapter_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"adapter weights do not fit this backbone: {len(missing)} missing, "
                f"{len(unexpected)} unexpected (e.g. {(missing or unexpected)[0]})"
            )
        for key, module in self.adapters.items():
            prefix = key.replace("__", ".")
            for pname, param in module.state_dict(keep_vars=True).items():
                value = state[f"{prefix}.{pname}"]
                if value.shape != param.shape:
                    raise ValueError(f"adapter weight {prefix}.{pname} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
                with torch.no_grad():
                    param.copy_(value.to(param.dtype))


def iter_trainable(modules: Iterable[nn.Module]) -> Iterator[nn.Parameter]:
    for module in modules:
        yield from (p for p in module.parameters() if p.requires_grad)


class PlaceholderEmbedding(nn.Module):
    """A text encoder's frozen token table plus learnable rows for new placeholder tokens.

    Textual inversion trains only these rows. Ids >= `first_id` read from `vectors`
    ([n_new, D], kept in fp32), every other id from the frozen table.
    """

    def __init__(self, base: nn.Embedding, vectors: torch.Tensor, first_id: int) -> None:
        super().__init__()
        self.base = base
        self.first_id = first_id
        self.vectors = nn.Parameter(vectors.detach().clone().float())
        self.token_row = 0  # the row of the token being learned or used

    @property
    def weight(self) -> torch.Tensor:
        # Some text models read `.weight` directly (e.g. to infer the dtype).
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_new = ids >= self.first_id  # [B, T]
        base_out = self.base(torch.where(is_new, torch.zeros_like(ids), ids))  # [B, T, D]
        new_out = self.vectors[(ids - self.first_id).clamp(min=0, max=self.vectors.shape[0] - 1)]
        return torch.where(is_new.unsqueeze(-1), new_out.to(base_out.dtype), base_out)


def add_placeholder_token(
    tokenizer: Any, text_encoder: Any, token: str, init_word: str
) -> PlaceholderEmbedding:
    """Add `token` to the tokenizer and give the text encoder a learnable row for it,
    initialised from the embedding of `init_word` (the mean of its pieces)."""
    from dreamvideo_cli.errors import DVError

    init_ids = tokenizer(init_word, add_special_tokens=False)["input_ids"]
    if not init_ids:
        raise DVError(f"the init word {init_word!r} has no tokens", "pass a plain word like --init-word dog")
    base = text_encoder.get_input_embeddings()
    if isinstance(base, PlaceholderEmbedding):
        raise RuntimeError("the text encoder already has a placeholder token")
    first_id = base.num_embeddings
    # A tokenizer reused across composes (an evaluation grid) may know the token already.
    if token not in tokenizer.get_added_vocab() and tokenizer.add_tokens([token]) != 1:
        raise DVError(f"the token {token!r} already exists in the tokenizer", "choose another subject name")
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id < first_id:
        raise DVError(f"the token {token!r} is already a word of the text encoder", "choose another subject name")
    with torch.no_grad():
        init = base.weight[torch.tensor(init_ids, device=base.weight.device)].float().mean(0)
    n_new = token_id - first_id + 1  # rows for every token added so far; only ours trains
    vectors = init.unsqueeze(0).repeat(n_new, 1)
    embedding = PlaceholderEmbedding(base, vectors, first_id).to(base.weight.device)
    embedding.token_row = token_id - first_id
    text_encoder.set_input_embeddings(embedding)
    return embedding


def remove_placeholder_tokens(tokenizer: Any, text_encoder: Any) -> None:
    """Undo `add_placeholder_token` on the text encoder (the tokenizer keeps the token)."""
    embedding = text_encoder.get_input_embeddings()
    if isinstance(embedding, PlaceholderEmbedding):
        text_encoder.set_input_embeddings(embedding.base)
