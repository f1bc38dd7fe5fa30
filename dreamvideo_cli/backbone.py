"""The contract every backbone plugin fulfils, for any model family.

A backbone names one frozen text-to-video model and says how to build it. Registering one
is cheap: plugins register the *class*; torch and the weights are touched only when
`build_denoiser` or `load` runs. `build_denoiser(device="meta")` must work without any
weights, so `dv backbones info` can count adapter parameters offline.

What a loaded backbone gives the engine (`Components`), each part typed:
- the frozen **denoiser** and its **family** (`DenoiserFamily`): how to call it on latents
  [B, C, F', h, w], where adapters go and how each is wired (`AdapterSite`, `AdapterSlot`),
  which layers gradient checkpointing re-runs, and measures that change no result;
- the training **objective** (`dreamvideo_cli.objectives`): DDPM epsilon/v or rectified flow;
- the **latent codec** (`dreamvideo_cli.codecs`): pixels to normalised latents and back,
  with its spatial and temporal compression, and subject masks to latent loss weights;
- the **text encoding** (`dreamvideo_cli.text`): tokenising, padding and mask conventions;
- the **appearance encoder**: images [B, 3, H, W] in [0, 1] -> embeddings [B, C'].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.objectives import DDPMObjective, NoiseSchedule, Objective

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dreamvideo_cli.codecs import LatentCodec
    from dreamvideo_cli.text import TextEncoding

AdapterKind = Literal["identity", "motion"]


@dataclass(frozen=True)
class VideoFormat:
    """The resolution and frame rate a backbone was trained at."""

    height: int
    width: int
    frames: int
    fps: int


@dataclass(frozen=True)
class SamplingDefaults:
    """What `dv compose` uses when the user names no sampler, step count or guidance."""

    sampler: str = "ddim"
    steps: int = 50
    guidance: float = 9.0
    # Guidance on the steps of a named expert, where it differs from `guidance` (Wan 2.2 A14B:
    # the low-noise expert's guidance_scale_2). A user's --guidance replaces all of them.
    expert_guidance: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Fingerprint:
    """What an adapter was trained on. Compose refuses adapters whose fingerprint differs."""

    backbone: str  # the registered backbone name, e.g. "modelscope"
    model_id: str  # a hub id or a description of where the weights came from
    revision: str  # a commit hash, a version, or a digest of the weights
    random_weights: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(
            backbone=str(data["backbone"]),
            model_id=str(data["model_id"]),
            revision=str(data["revision"]),
            random_weights=bool(data.get("random_weights", False)),
        )

    def describe(self) -> str:
        if len(self.revision) <= 16:
            revision = self.revision
        elif ":" in self.revision:  # e.g. local-sha256:<hex>: keep the scheme and some digest
            scheme, _, digest = self.revision.partition(":")
            revision = f"{scheme}:{digest[:8]}"
        else:
            revision = self.revision[:12]
        weights = "random weights" if self.random_weights else f"revision {revision}"
        return f"{self.backbone} ({self.model_id}, {weights})"


@dataclass(frozen=True)
class AdapterSlot:
    """One sub-layer of a block that gets an adapter beside it, and how it is wired.

    With `norm` set, the adapter reads the block's input *before* that norm, as DreamVideo
    places it: while attached, the block's norm is an Identity and the wrapper computes
    `sublayer(norm(x)) + adapter(x)`. Only valid where the block feeds the norm's output
    straight into the sub-layer and adds the result to x without a gate (UNet3D's blocks,
    Wan's cross-attention). With `norm=None`, the adapter reads what the sub-layer reads
    and its output joins the sub-layer's (`sublayer(m) + adapter(m)`), so a block that
    modulates m and gates the residual applies both to the adapter too (a DiT's
    self-attention and feed-forward). Either way a zero adapter leaves the block
    bit-identical, and detaching restores the original modules.
    """

    sublayer: str  # attribute name in the block, e.g. "attn2", "ffn"
    norm: str | None = None
    # The block applies the norm to x in float32 and casts back (Wan); the wrapper must too.
    norm_in_fp32: bool = False


@dataclass(frozen=True)
class AdapterSite:
    """One block that gets adapters: its dotted path in the denoiser, its width and slots."""

    path: str
    kind: AdapterKind
    width: int
    slots: tuple[AdapterSlot, ...] = ()


@dataclass(frozen=True)
class AdapterDesign:
    """A backbone's default adapter shape. `bottleneck=None` is the paper's d/2; an int is
    one width for every site. `condition_in_bottleneck` adds the appearance condition after
    the down-projection (C' -> h) instead of before it (C' -> d): the same family of
    functions (the composition of two linear maps), with h/d of the parameters."""

    identity_bottleneck: int | None = None
    motion_bottleneck: int | None = None
    condition_in_bottleneck: bool = False

    def bottleneck(self, kind: AdapterKind) -> int | None:
        return self.identity_bottleneck if kind == "identity" else self.motion_bottleneck


@dataclass(frozen=True)
class Expert:
    """One of several denoisers of a backbone (Wan 2.2 A14B's high- and low-noise experts):
    the child module at `path` of the backbone's denoiser, which denoises the objective's
    model timesteps t with start <= t < end (None: unbounded on that side). The ranges of a
    family's experts are disjoint and cover every timestep; the family's `denoise` routes
    each row of a batch to its expert, and its adapter sites' paths start with `path`."""

    name: str
    path: str
    start: float | None = None
    end: float | None = None

    def holds(self, timestep: float) -> bool:
        return (self.start is None or timestep >= self.start) and (self.end is None or timestep < self.end)

    def describe_range(self) -> str:
        low = "" if self.start is None else f"{self.start:g} <= "
        high = "" if self.end is None else f" < {self.end:g}"
        return f"{low}t{high}"


CheckpointTarget = tuple[Any, "str | int"]  # (a module or ModuleList, attribute name or index)


class DenoiserFamily(ABC):
    """What the engine needs to know about one kind of denoiser (diffusers UNet3D, Wan's
    transformer, ...). Everything specific to a family lives in its subclass."""

    name: ClassVar[str]

    @abstractmethod
    def denoise(
        self, model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """One prediction: latents [B, C, F', h, w], timestep [B] (the objective's model
        timestep), text context [B, T, D] -> prediction [B, C, F', h, w]. `model` is the
        denoiser or a compiled wrapper of it."""

    @abstractmethod
    def adapter_sites(self, denoiser: nn.Module) -> list[AdapterSite]:
        """Every identity and motion site, in module order (works on the meta device)."""

    @abstractmethod
    def checkpoint_targets(self, denoiser: nn.Module) -> list[CheckpointTarget]:
        """The layers gradient checkpointing re-runs in the backward pass."""

    def experts(self) -> tuple[Expert, ...]:
        """The experts of a denoiser made of several (empty: one denoiser for every timestep)."""
        return ()

    def prepare(self, denoiser: nn.Module, device: torch.device) -> None:  # noqa: B027
        """Engine-wide measures that change no result (e.g. chunked attention on CUDA)."""


@dataclass
class Components:
    """The loaded, frozen parts of a backbone, computing on `device`.

    A plugin's `load` puts every part on the device it is given. On a GPU the engine loads
    them to the host instead and sets `staging`: each part then waits there and visits the
    GPU only while it works (`dreamvideo_cli.memory.placement`)."""

    denoiser: nn.Module  # a diffusers UNet3DConditionModel, WanTransformer3DModel, ...
    family: DenoiserFamily
    objective: Objective
    codec: LatentCodec
    text: TextEncoding
    appearance_encoder: nn.Module  # images [B, 3, H, W] in [0, 1] -> embeddings [B, appearance_dim]
    appearance_dim: int
    device: torch.device
    dtype: torch.dtype  # the dtype the frozen denoiser runs in
    # Where the parts wait while they do not work (host memory), or None: every part stays
    # on `device` from loading on (a CPU run, where the host is the device).
    staging: torch.device | None = None

    # Read-only shortcuts into the parts above, for code that works on the raw models:
    # textual inversion adds its token to the tokenizer and a row to the text encoder's
    # embeddings; tests and scripts call a frame-VAE codec's VAE directly.
    @property
    def tokenizer(self) -> Any:
        """The text encoding's tokenizer (`text.tokenizer`)."""
        return self.text.tokenizer

    @property
    def text_encoder(self) -> Any:
        """The text encoding's model (`text.model`)."""
        return self.text.model

    @property
    def vae(self) -> Any:
        """The codec's VAE (`codec.vae`), or None for a codec that has none."""
        return getattr(self.codec, "vae", None)

    def denoise(
        self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, model: nn.Module | None = None
    ) -> torch.Tensor:
        """The family's call on this backbone's denoiser (or `model`, a compiled wrapper)."""
        return self.family.denoise(model if model is not None else self.denoiser, latents, timestep, context)


class Backbone(ABC):
    """A frozen text-to-video model that DreamVideo adapters attach to.

    Subclasses set the class attributes and implement `family`, `build_denoiser`,
    `fingerprint` and `load`. `family` says how the denoiser is called and where adapters
    go; `training_objective` defaults to DDPM with `schedule`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    is_test: ClassVar[bool] = False  # listed as a test backbone; never the default
    video_format: ClassVar[VideoFormat]
    appearance_dim: ClassVar[int]  # size of the appearance encoder's image embedding
    # Frames per latent frame of the codec (after the first): videos have k * this + 1 frames.
    temporal_compression: ClassVar[int] = 1
    schedule: ClassVar[NoiseSchedule] = NoiseSchedule()  # DDPM backbones only
    sampling: ClassVar[SamplingDefaults] = SamplingDefaults()
    adapter_design: ClassVar[AdapterDesign] = AdapterDesign()
    # Motion learning's defaults when the user names none: the paper's 32 frames at 8 fps.
    motion_frames: ClassVar[int] = 32
    motion_fps: ClassVar[int] = 8
    # For a family with several experts (`DenoiserFamily.experts`): the experts that get each
    # kind of adapter, and that its training timesteps are drawn for, when the user names none
    # (`--experts`). A kind not listed: every expert.
    default_experts: ClassVar[Mapping[AdapterKind, tuple[str, ...]]] = {}

    def __init__(self, *, path: str | None = None, random_weights: bool = False) -> None:
        self.path = path
        self.random_weights = random_weights

    @classmethod
    @abstractmethod
    def family(cls) -> DenoiserFamily:
        """The denoiser family (e.g. `dreamvideo_cli.UNET3D`). A method, not a class
        attribute, so that registering a backbone does not import torch: import the family
        inside it."""

    @classmethod
    def training_objective(cls) -> Objective:
        return DDPMObjective(cls.schedule)

    @abstractmethod
    def build_denoiser(self, device: str = "meta") -> nn.Module:
        """The denoiser's architecture with uninitialised (meta) or random weights."""

    def adapter_sites(self, denoiser: nn.Module) -> list[AdapterSite]:
        return self.family().adapter_sites(denoiser)

    @classmethod
    def same_weights(cls, a: Fingerprint, b: Fingerprint) -> bool:
        """Whether adapters trained on `a` fit weights `b`. A backbone whose weights are
        published under several hub ids (a renamed repository) says they are the same."""
        return a == b

    def check_frames(self, frames: int) -> None:
        """Refuse, in one line, a frame count the codec cannot take (a video VAE that
        compresses time takes k * factor + 1 frames)."""
        factor = self.temporal_compression
        if frames < 1:
            raise DVError(f"--frames must be at least 1, got {frames}", f"use --frames {self.video_format.frames}")
        if factor > 1 and (frames - 1) % factor:
            lower = (frames - 1) // factor * factor + 1
            raise DVError(
                f"--frames {frames} does not fit {self.name}'s video VAE, which takes {factor}k+1 frames",
                f"use --frames {lower} or {lower + factor}",
            )

    @abstractmethod
    def fingerprint(self) -> Fingerprint:
        """The identity of the weights `load` would return. Must not download anything."""

    def fetch_weights(self) -> None:  # noqa: B027 - optional hook, a no-op unless overridden
        """Make sure every part `load` needs is on this machine (downloading what is missing,
        unless offline) without loading any of it; raise one `MissingWeightsError` naming
        every missing part. Learning calls it before it makes a run folder. The default does
        nothing: random or embedded weights."""

    @abstractmethod
    def load(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Components:
        """Load (or, with random_weights, build) every frozen component on `device`.

        Raise `MissingWeightsError` with the command that fetches the weights when they are
        not on this machine and cannot be downloaded.
        """
