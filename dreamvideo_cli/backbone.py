"""The contract every backbone plugin fulfils.

A backbone names one frozen text-to-video model and says how to build it. Registering
one is cheap: plugins register the *class*; torch and the weights are touched only when
`build_unet` or `load` runs. `build_unet(device="meta")` must work without any weights,
so `dv backbones info` can count adapter parameters offline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

AdapterKind = Literal["identity", "motion"]


@dataclass(frozen=True)
class VideoFormat:
    """The resolution and frame rate a backbone was trained at."""

    height: int
    width: int
    frames: int
    fps: int


@dataclass(frozen=True)
class NoiseSchedule:
    """The training noise schedule; samplers build their schedulers from it."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"

    def as_config(self) -> dict[str, Any]:
        return asdict(self)


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
class AdapterSite:
    """One transformer block that gets an adapter: its dotted path in the UNet and width."""

    path: str
    kind: AdapterKind
    width: int


@dataclass
class Components:
    """The loaded, frozen parts of a backbone, on one device."""

    unet: Any  # a diffusers UNet3DConditionModel (or one with the same forward signature)
    vae: Any  # a diffusers AutoencoderKL
    text_encoder: Any  # a transformers CLIPTextModel-like model: input_ids -> last_hidden_state
    tokenizer: Any  # a transformers tokenizer for text_encoder
    appearance_encoder: nn.Module  # images [B, 3, H, W] in [0, 1] -> embeddings [B, appearance_dim]
    appearance_dim: int
    schedule: NoiseSchedule
    vae_scale_factor: float
    device: torch.device
    dtype: torch.dtype  # the dtype frozen weights run in
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_downscale(self) -> int:
        """How many pixels one latent cell covers per side (8 for Stable Diffusion's VAE).
        A backbone whose `vae` is not an AutoencoderKL sets `extras["vae_downscale"]`."""
        if "vae_downscale" in self.extras:
            return int(self.extras["vae_downscale"])
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    def mask_latents(self, masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Subject masks [N, 1, H, W] in {0, 1} -> loss weights on latents [N, 1 or C, h, w].

        A latent cell of a real VAE mixes every pixel under it, so it counts as subject if
        any pixel under it is (the authors' choice: the loss keeps the subject's edges). A
        backbone whose latent channels are pixels (a space-to-depth VAE) maps the mask
        exactly instead, by setting `extras["mask_latents"]` to that function: then no
        photo background leaks into the subject's edge cells."""
        exact = self.extras.get("mask_latents")
        if exact is not None:
            out: torch.Tensor = exact(masks)
            return out
        import torch.nn.functional as F

        return F.adaptive_max_pool2d(masks, size)


class Backbone(ABC):
    """A frozen text-to-video model that DreamVideo adapters attach to.

    Subclasses set the class attributes and implement `build_unet`, `fingerprint` and
    `load`. `adapter_sites` has a default that finds the DreamVideo sites in any diffusers
    `UNet3DConditionModel`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    is_test: ClassVar[bool] = False  # listed as a test backbone; never the default
    video_format: ClassVar[VideoFormat]
    appearance_dim: ClassVar[int]  # size of the appearance encoder's image embedding
    schedule: ClassVar[NoiseSchedule] = NoiseSchedule()

    def __init__(self, *, path: str | None = None, random_weights: bool = False) -> None:
        self.path = path
        self.random_weights = random_weights

    @abstractmethod
    def build_unet(self, device: str = "meta") -> nn.Module:
        """The UNet's architecture with uninitialised (meta) or random weights."""

    def adapter_sites(self, unet: nn.Module) -> list[AdapterSite]:
        from dreamvideo_cli.adapters import find_adapter_sites

        return find_adapter_sites(unet)

    @abstractmethod
    def fingerprint(self) -> Fingerprint:
        """The identity of the weights `load` would return. Must not download anything."""

    @abstractmethod
    def load(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Components:
        """Load (or, with random_weights, build) every frozen component on `device`.

        Raise `MissingWeightsError` with the command that fetches the weights when they are
        not on this machine and cannot be downloaded.
        """
