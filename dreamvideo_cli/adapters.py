"""DreamVideo's identity and motion adapters, and attaching them to a denoiser.

Paper, Eq. (2), identity adapter on the spatial hidden state h:
    h' = h + GELU(h W_down) W_up
Eq. (3)-(4), motion adapter on the temporal hidden state h with a CLIP image embedding e:
    h^e = h + broadcast(e W_cond)
    h'  = h + GELU(h^e W_down) W_up
W_up starts at zero so the frozen model is unchanged at step 0. The bottleneck is d/2 in
the paper; a backbone may choose another width (`AdapterDesign`), and may add the
condition after W_down (C' -> h) instead of before it, which spans the same functions.

Where adapters go and how each is wired into its block is the denoiser family's
(`AdapterSite.slots`, `dreamvideo_cli.families`); this module only follows the slots.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dreamvideo_cli.backbone import AdapterKind, AdapterSite
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.speed import Checkpointed

__all__ = [
    "AdapterSet",
    "AppearanceCondition",
    "IdentityAdapter",
    "MotionAdapter",
    "ParallelAdapter",
    "PlaceholderEmbedding",
    "adapter_parameter_count",
    "adapter_parameter_counts",
    "add_placeholder_token",
    "remove_placeholder_tokens",
    "resolve_site",
]


class IdentityAdapter(nn.Module):
    """Bottleneck d -> h -> d with GELU (h = d/2 unless given); returns only the residual branch."""

    def __init__(self, width: int, bottleneck: int | None = None) -> None:
        super().__init__()
        hidden = bottleneck or width // 2
        self.down = nn.Linear(width, hidden)
        self.up = nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = 1.0  # compose-time strength; 1.0 is the paper

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: [N, tokens, d] -> [N, tokens, d]
        return self.scale * self.up(F.gelu(self.down(h)))


class AppearanceCondition:
    """The CLIP image embedding shared by every motion adapter for the current forward.

    The denoiser's forward signature has no slot for it, so the engine sets it here before
    each call: e is [B, C'] for a batch of B videos (conditional and unconditional
    branches included; the unconditional one gets zeros).
    """

    def __init__(self) -> None:
        self.embedding: torch.Tensor | None = None

    def set(self, embedding: torch.Tensor | None) -> None:
        self.embedding = embedding


class MotionAdapter(nn.Module):
    """Bottleneck with a condition layer on the appearance embedding (C' -> d, or C' -> h
    with `condition_in_bottleneck`)."""

    def __init__(
        self,
        width: int,
        condition_dim: int,
        condition: AppearanceCondition,
        bottleneck: int | None = None,
        condition_in_bottleneck: bool = False,
    ) -> None:
        super().__init__()
        hidden = bottleneck or width // 2
        self.down = nn.Linear(width, hidden)
        self.up = nn.Linear(hidden, width)
        self.cond = nn.Linear(condition_dim, hidden if condition_in_bottleneck else width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = 1.0
        self.strength = 1.0  # lambda, the appearance-guidance strength
        self.condition_in_bottleneck = condition_in_bottleneck
        self._condition = condition

    def _broadcast_condition(self, h: torch.Tensor) -> torch.Tensor | None:
        e = self._condition.embedding
        if e is None:
            return None
        c = self.cond(e.to(self.cond.weight.dtype))  # [B, d or h]
        # h is [B * positions, frames, d] in a UNet3D's temporal transformer (batch-major)
        # and [B, tokens, d] in a DiT block: one condition row per video, over its rows.
        per_video = h.shape[0] // c.shape[0]
        return c.repeat_interleave(per_video, dim=0).unsqueeze(1)  # [B * positions, 1, d or h]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        c = self._broadcast_condition(h)
        if self.condition_in_bottleneck:
            z = self.down(h)
            if c is not None:
                z = z + self.strength * c.to(z.dtype)
            return self.scale * self.up(F.gelu(z))
        h_e = h + self.strength * c.to(h.dtype) if c is not None else h  # Eq. (3): broadcast over frames
        return self.scale * self.up(F.gelu(self.down(h_e)))  # Eq. (4) without the skip


class ParallelAdapter(nn.Module):
    """Replaces a block's sub-layer so it returns sublayer(norm(x)) + adapter(x) (a slot
    with a norm: the block's own norm is an Identity while attached) or
    sublayer(x) + adapter(x) (a slot without). `detach` puts the modules back."""

    def __init__(
        self, norm: nn.Module | None, sublayer: nn.Module, adapter: nn.Module, norm_in_fp32: bool = False
    ) -> None:
        super().__init__()
        self.norm = norm
        self.sublayer = sublayer
        self.adapter = adapter
        self.norm_in_fp32 = norm_in_fp32

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.norm is None:
            inner = hidden_states
        elif self.norm_in_fp32:
            inner = self.norm(hidden_states.float()).type_as(hidden_states)
        else:
            inner = self.norm(hidden_states)
        out: torch.Tensor = self.sublayer(inner, *args, **kwargs)
        return out + self.adapter(hidden_states)


def adapter_parameter_count(
    site: AdapterSite,
    condition_dim: int | None = None,
    bottleneck: int | None = None,
    condition_in_bottleneck: bool = False,
) -> int:
    """Closed form, per slot: bottleneck 2*d*h + h + d (h = d // 2 unless given), plus
    (C' + 1) * d for a motion adapter's condition layer ((C' + 1) * h in the bottleneck)."""
    d = site.width
    h = bottleneck or d // 2
    per_slot = 2 * d * h + h + d
    if site.kind == "motion":
        if condition_dim is None:
            raise ValueError("motion adapters need the appearance embedding size")
        per_slot += (condition_dim + 1) * (h if condition_in_bottleneck else d)
    return len(site.slots) * per_slot


def adapter_parameter_counts(sites: Iterable[AdapterSite], condition_dim: int, design: Any = None) -> dict[str, int]:
    """Totals per kind; `design` is the backbone's `AdapterDesign` (None: the paper's)."""
    counts = {"identity": 0, "motion": 0}
    for site in sites:
        bottleneck = design.bottleneck(site.kind) if design is not None else None
        in_bottleneck = bool(design is not None and design.condition_in_bottleneck)
        counts[site.kind] += adapter_parameter_count(site, condition_dim, bottleneck, in_bottleneck)
    counts["total"] = counts["identity"] + counts["motion"]
    return counts


def resolve_site(root: nn.Module, path: str) -> nn.Module:
    """The module at a dotted site path, looking through activation-checkpoint wrappers
    (so adapters attach the same way with or without `--gradient-checkpointing`)."""
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
    """All adapters of one kind for one denoiser, attachable and detachable as a unit.

    Its state dict (`adapter_state_dict`) is keyed by the denoiser path of the sub-layer each
    adapter sits beside, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn2.down.weight`
    or `blocks.3.attn1.down.weight`.
    """

    def __init__(
        self,
        kind: AdapterKind,
        sites: Iterable[AdapterSite],
        condition_dim: int | None = None,
        *,
        bottleneck: int | None = None,
        condition_in_bottleneck: bool = False,
    ) -> None:
        super().__init__()
        self.kind: AdapterKind = kind
        self.sites = [s for s in sites if s.kind == kind]
        self.condition = AppearanceCondition()
        self.condition_dim = condition_dim
        self.bottleneck = bottleneck
        self.condition_in_bottleneck = condition_in_bottleneck
        if kind == "motion" and condition_dim is None:
            raise ValueError("motion adapters need condition_dim")
        adapters: dict[str, nn.Module] = {}
        for site in self.sites:
            if not site.slots:
                raise ValueError(f"adapter site {site.path} names no slots")
            for slot in site.slots:
                if kind == "identity":
                    adapters[_key(site.path, slot.sublayer)] = IdentityAdapter(site.width, bottleneck)
                else:
                    assert condition_dim is not None
                    adapters[_key(site.path, slot.sublayer)] = MotionAdapter(
                        site.width, condition_dim, self.condition, bottleneck, condition_in_bottleneck
                    )
        self.adapters = nn.ModuleDict(adapters)
        # A plain list, not an attribute: nn.Module would adopt the denoiser as a submodule.
        self._attached: list[nn.Module] = []

    @classmethod
    def for_backbone(
        cls, kind: AdapterKind, sites: Iterable[AdapterSite], condition_dim: int | None, design: Any
    ) -> AdapterSet:
        """New adapters shaped by a backbone's `AdapterDesign`."""
        return cls(
            kind,
            sites,
            condition_dim if kind == "motion" else None,
            bottleneck=design.bottleneck(kind),
            condition_in_bottleneck=kind == "motion" and design.condition_in_bottleneck,
        )

    @classmethod
    def for_state(
        cls, kind: AdapterKind, sites: Iterable[AdapterSite], condition_dim: int | None, state: dict[str, torch.Tensor]
    ) -> AdapterSet:
        """Adapters shaped like stored weights (their bottleneck and where the condition is
        added are read off the tensors), with the weights loaded."""
        bottleneck = None
        in_bottleneck = False
        downs = [k for k in state if k.endswith(".down.weight")]
        if downs:
            hidden, width = state[downs[0]].shape
            bottleneck = None if hidden == width // 2 else int(hidden)
            cond = state.get(downs[0].removesuffix("down.weight") + "cond.weight")
            in_bottleneck = cond is not None and cond.shape[0] == hidden and hidden != width
        adapters = cls(
            kind,
            sites,
            condition_dim if kind == "motion" else None,
            bottleneck=bottleneck,
            condition_in_bottleneck=in_bottleneck,
        )
        adapters.load_adapter_state_dict(state)
        return adapters

    def spec(self) -> dict[str, Any]:
        """What the registry records of the adapters' shape (beyond the paper's default)."""
        out: dict[str, Any] = {}
        if self.bottleneck is not None:
            out["bottleneck"] = self.bottleneck
        if self.condition_in_bottleneck:
            out["condition"] = "bottleneck"
        return out

    # -- attaching -------------------------------------------------------------------
    def attach(self, denoiser: nn.Module) -> AdapterSet:
        if self._attached:
            raise RuntimeError("adapters are already attached")
        for site in self.sites:
            block = resolve_site(denoiser, site.path)
            for slot in site.slots:
                sublayer = getattr(block, slot.sublayer)
                if isinstance(sublayer, ParallelAdapter):
                    raise RuntimeError(f"{site.path}.{slot.sublayer} already has an adapter")
                norm = getattr(block, slot.norm) if slot.norm is not None else None
                adapter = self.adapters[_key(site.path, slot.sublayer)]
                setattr(block, slot.sublayer, ParallelAdapter(norm, sublayer, adapter, slot.norm_in_fp32))
                if slot.norm is not None:
                    setattr(block, slot.norm, nn.Identity())
        self._attached.append(denoiser)
        return self

    def detach(self) -> None:
        if not self._attached:
            return
        denoiser = self._attached.pop()
        for site in self.sites:
            block = resolve_site(denoiser, site.path)
            for slot in site.slots:
                wrapper = getattr(block, slot.sublayer)
                assert isinstance(wrapper, ParallelAdapter)
                setattr(block, slot.sublayer, wrapper.sublayer)
                if slot.norm is not None:
                    setattr(block, slot.norm, wrapper.norm)

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
                    raise ValueError(
                        f"adapter weight {prefix}.{pname} has shape {tuple(value.shape)}, expected {tuple(param.shape)}"
                    )
                with torch.no_grad():
                    param.copy_(value.to(param.dtype))


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


def add_placeholder_token(tokenizer: Any, text_encoder: Any, token: str, init_word: str) -> PlaceholderEmbedding:
    """Add `token` to the tokenizer and give the text encoder a learnable row for it,
    initialised from the embedding of `init_word` (the mean of its pieces)."""
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
        # T5-family tables have spare rows past the tokenizer's last id (T5 v1.1: 32,100 ids,
        # 32,128 rows): a token added to such a tokenizer lands in one, which no real word
        # uses, so that row is ours. A smaller id is a word the encoder was trained on.
        if token_id < int(tokenizer.vocab_size):
            raise DVError(f"the token {token!r} is already a word of the text encoder", "choose another subject name")
        first_id = token_id
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
