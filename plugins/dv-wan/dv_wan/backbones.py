"""Wan 2.1 text-to-video (1.3B and 14B) and a tiny random-weight Wan for tests, as dv
backbones. Registering imports nothing heavy; torch and diffusers load in `load`.

Where the weights come from, in order: `random_weights=True` (the full-size architecture,
seeded random weights, nothing read); `path=DIR` (a local WanPipeline folder:
transformer/, vae/, text_encoder/, tokenizer/, with the appearance encoder in
DIR/image_encoder/ if there); otherwise the Hugging Face cache, downloading only when
HF_HUB_OFFLINE is not set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dreamvideo_cli.backbone import (
    AdapterDesign,
    Backbone,
    Components,
    DenoiserFamily,
    Fingerprint,
    SamplingDefaults,
    VideoFormat,
)
from dv_wan import configs, loading, tiny  # torch-free: registering stays light

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dreamvideo_cli.objectives import Objective
    from dv_wan.loading import WanParts

# Wan 2.1's samplers use flow shift 3.0 at 480p (diffusers' Wan docs; the hub's scheduler
# config of the T2V repositories); training draws timesteps shifted the same way
# (musubi-tuner recommends --discrete_flow_shift 3.0 for the 1.3B model).
FLOW_SHIFT = 3.0


class WanBackbone(Backbone):
    name = "wan"
    description = "Wan 2.1 T2V 1.3B (Wan-AI/Wan2.1-T2V-1.3B-Diffusers), a flow-matching diffusion transformer"
    hub_id: ClassVar[str] = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    hub_revision: ClassVar[str] = "main"
    size: ClassVar[Literal["1.3B", "14B"]] = "1.3B"
    video_format = VideoFormat(height=480, width=832, frames=81, fps=16)  # WanPipeline's defaults
    temporal_compression = configs.VAE_TEMPORAL_FACTOR
    appearance_dim = configs.APPEARANCE_DIM  # OpenCLIP ViT-H-14's image embedding, as for ModelScope
    sampling = SamplingDefaults(sampler="unipc", steps=50, guidance=5.0)  # WanPipeline's defaults
    # d/2 bottlenecks on a 1536-wide DiT would be 354M motion parameters, a quarter of the
    # backbone; a 128-wide bottleneck with the condition added inside it gives 11.8M
    # identity and 31.6M motion parameters (docs/method.md).
    adapter_design = AdapterDesign(identity_bottleneck=128, motion_bottleneck=128, condition_in_bottleneck=True)
    # Motion learning's defaults (MotionConfig.frames/fps = None): 33 frames at 16 fps, about
    # two seconds, 9 latent frames: a third of the tokens of an 81-frame clip.
    motion_frames: ClassVar[int] = 33
    motion_fps: ClassVar[int] = 16
    # The 5.7B UMT5 encoder is moved to the CPU between uses on a GPU.
    offload_text_encoder: ClassVar[bool] = True
    max_text_length: ClassVar[int] = 512

    @classmethod
    def family(cls) -> DenoiserFamily:
        from dv_wan.family import WAN

        return WAN

    @classmethod
    def training_objective(cls) -> Objective:
        from dreamvideo_cli.objectives import FlowMatchObjective

        return FlowMatchObjective(shift=FLOW_SHIFT)

    def build_denoiser(self, device: str = "meta") -> nn.Module:
        import torch
        from diffusers import WanTransformer3DModel

        with torch.device(device):
            model: Any = WanTransformer3DModel(**configs.TRANSFORMER_CONFIGS[self.size])
        return model

    def fingerprint(self) -> Fingerprint:

        return loading.fingerprint(self.name, self.hub_id, self.hub_revision, self.path, self.random_weights)

    def _parts(self, device: torch.device, dtype: torch.dtype) -> WanParts:

        if self.random_weights:
            return loading.build_random(self.size, device, dtype)
        pipeline, appearance = loading.locate(self.hub_id, self.hub_revision, self.path)
        return loading.load_folder(pipeline, appearance, device, dtype)

    def load(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Components:
        import torch

        from dreamvideo_cli.text import T5TextEncoding
        from dv_wan.family import WanVideoCodec

        device = torch.device(device)
        dtype = dtype or torch.float32
        parts = self._parts(device, dtype)
        text = T5TextEncoding(
            parts.tokenizer, parts.text_encoder, self.max_text_length, offload=self.offload_text_encoder
        )
        text.device = device
        return Components(
            denoiser=parts.transformer,
            family=self.family(),
            objective=self.training_objective(),
            codec=WanVideoCodec(parts.vae),
            text=text,
            appearance_encoder=parts.appearance,
            appearance_dim=self.appearance_dim,
            device=device,
            dtype=dtype,
        )


class Wan14BBackbone(WanBackbone):
    name = "wan-14b"
    description = "Wan 2.1 T2V 14B (Wan-AI/Wan2.1-T2V-14B-Diffusers), a flow-matching diffusion transformer"
    hub_id = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
    size = "14B"


class TinyWanBackbone(WanBackbone):
    """Wan's classes (WanTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel, a T5
    tokenizer made on the fly) at a few hundred thousand parameters, random weights: the
    whole engine runs on a Wan-shaped model on a CPU in seconds."""

    name = "tiny-wan"
    description = "random-weight Wan-shaped model for tests (no download)"
    is_test = True
    video_format = VideoFormat(height=32, width=32, frames=9, fps=16)
    appearance_dim = tiny.TINY_APPEARANCE_DIM
    adapter_design = AdapterDesign(identity_bottleneck=8, motion_bottleneck=8, condition_in_bottleneck=True)
    motion_frames = 9
    motion_fps = 16
    offload_text_encoder = False
    max_text_length = tiny.TINY_MAX_LENGTH

    def build_denoiser(self, device: str = "meta") -> nn.Module:
        import torch
        from diffusers import WanTransformer3DModel

        with torch.device(device):
            model: Any = WanTransformer3DModel(**tiny.tiny_transformer_config())
        return model

    def fingerprint(self) -> Fingerprint:

        if self.path is not None:
            return loading.fingerprint(self.name, "local", "main", self.path, False)
        return Fingerprint(self.name, "dv_wan.tiny", tiny.TINY_WAN_REVISION)

    def _parts(self, device: torch.device, dtype: torch.dtype) -> WanParts:

        if self.path is not None:
            pipeline, appearance = loading.locate(self.hub_id, self.hub_revision, self.path)
            return loading.load_folder(pipeline, appearance, device, dtype)
        return tiny.tiny_parts(device, dtype)
