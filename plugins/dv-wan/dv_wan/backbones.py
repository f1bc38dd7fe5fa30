"""Wan 2.1 text-to-video (1.3B and 14B), Wan 2.2 TI2V-5B as text-to-video, Wan 2.2 T2V-A14B
(two experts), and tiny random-weight models of each for tests, as dv backbones. Registering imports nothing heavy;
torch and diffusers load in `load`.

Where the weights come from, in order: `random_weights=True` (the full-size architecture,
seeded random weights, nothing read); `path=DIR` (a local WanPipeline folder:
transformer/, vae/, text_encoder/, tokenizer/, with the appearance encoder in
DIR/image_encoder/ if there); otherwise the Hugging Face cache, downloading only when
HF_HUB_OFFLINE is not set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from dreamvideo_cli.backbone import (
    AdapterDesign,
    AdapterKind,
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
    from dv_wan.configs import WanSize
    from dv_wan.loading import WanParts

# Wan 2.1's samplers use flow shift 3.0 at 480p (diffusers' Wan docs; the hub's scheduler
# config of the T2V repositories); training draws timesteps shifted the same way
# (musubi-tuner recommends --discrete_flow_shift 3.0 for the 1.3B model).
FLOW_SHIFT = 3.0
# Wan 2.2 TI2V-5B samples at 720p with shift 5.0 (its scheduler config as diffusers converts
# it; Wan's wan_ti2v_5B.py `sample_shift`). The engine draws training timesteps with the
# sampler's shift, so training uses 5.0 too: more of the steps at high noise, where the
# larger token grid of 720p keeps more of the signal (the reason samplers shift more there).
FLOW_SHIFT_22 = 5.0


class WanBackbone(Backbone):
    name = "wan"
    description = "Wan 2.1 T2V 1.3B (Wan-AI/Wan2.1-T2V-1.3B-Diffusers), a flow-matching diffusion transformer"
    hub_id: ClassVar[str] = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    hub_revision: ClassVar[str] = "main"
    size: ClassVar[WanSize] = "1.3B"
    flow_shift: ClassVar[float] = FLOW_SHIFT
    # WanPipeline's `expand_timesteps` (the family's per-token timesteps), and the pixel sizes
    # the codec takes (None: any; Wan 2.1 as it always was).
    per_token_timesteps: ClassVar[bool] = False
    size_multiple: ClassVar[int | None] = None
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
        from dv_wan.family import WAN, WAN22_TI2V

        return WAN22_TI2V if cls.per_token_timesteps else WAN

    @classmethod
    def training_objective(cls) -> Objective:
        from dreamvideo_cli.objectives import FlowMatchObjective

        return FlowMatchObjective(shift=cls.flow_shift)

    def build_denoiser(self, device: str = "meta") -> nn.Module:
        import torch
        from diffusers import WanTransformer3DModel

        with torch.device(device):
            experts = [WanTransformer3DModel(**configs.TRANSFORMER_CONFIGS[self.size]) for _ in self._expert_folders()]
        model: nn.Module = loading.join_experts(experts)
        return model

    def _expert_folders(self) -> tuple[str, ...]:
        return configs.EXPERT_FOLDERS[self.size]

    def fingerprint(self) -> Fingerprint:

        return loading.fingerprint(self.name, self.hub_id, self.hub_revision, self.path, self.random_weights, self.size)

    def fetch_weights(self) -> None:
        if not self.random_weights:
            loading.locate(self.hub_id, self.hub_revision, self.path, self.size)  # both repositories, named together

    def _parts(self, device: torch.device, dtype: torch.dtype) -> WanParts:

        if self.random_weights:
            return loading.build_random(self.size, device, dtype)
        pipeline, appearance = loading.locate(self.hub_id, self.hub_revision, self.path, self.size)
        return loading.load_folder(pipeline, appearance, device, dtype, self.size)

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
            codec=WanVideoCodec(parts.vae, size_multiple=self.size_multiple, label=self.name),
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


class Wan22TI2V5BBackbone(WanBackbone):
    """Wan 2.2 TI2V-5B used for text-to-video: Wan 2.1's block layout at 3072 wide, Wan 2.2's
    48-channel VAE (16x spatial, 4x temporal), per-token timesteps; sizes multiples of 32."""

    name = "wan2.2-5b"
    description = "Wan 2.2 TI2V-5B as text-to-video (Wan-AI/Wan2.2-TI2V-5B-Diffusers), 720p at 24 fps"
    hub_id = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    size = "5B"
    flow_shift = FLOW_SHIFT_22
    per_token_timesteps = True
    size_multiple = configs.VAE22_CONFIG["scale_factor_spatial"] * 2  # times the transformer's 2x2 patch
    # Wan's wan_ti2v_5B.py: 121 frames at 24 fps, 1280 wide and 704 high (its "1280*704" is
    # width*height); WanPipeline samples it at these with 50 steps and guidance 5.0.
    video_format = VideoFormat(height=704, width=1280, frames=121, fps=24)
    # 49 frames at the model's own 24 fps: two seconds, 13 latent frames, 11,440 tokens at
    # 1280x704 (fewer than Wan 2.1's 33 frames at 832x480, 14,040). Clips are sampled at the
    # fps compose writes, so a learnt motion plays at the speed it was shown.
    motion_frames = 49
    motion_fps = 24
    # The same 128-wide bottleneck as Wan 2.1 (docs/method.md): d/2 would be 1536 here.


class Wan22A14BBackbone(WanBackbone):
    """Wan 2.2 T2V-A14B: two Wan 2.1-14B-shaped experts behind one denoiser (`WanExperts`), the
    high-noise one for t >= 875, the low-noise one below; Wan 2.1's VAE and text encoder."""

    name = "wan2.2-a14b"
    description = "Wan 2.2 T2V-A14B (Wan-AI/Wan2.2-T2V-A14B-Diffusers), two 14B experts, high and low noise"
    hub_id = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
    size = "A14B"
    # The Diffusers repository's scheduler: shift 3.0, as converted (configs' docstring; Wan's
    # own setup samples with 12.0). Training draws timesteps with the same shift.
    flow_shift = FLOW_SHIFT
    video_format = VideoFormat(height=480, width=832, frames=81, fps=16)  # 480p, as shift 3.0 suits
    # Wan's wan_t2v_A14B.py: 40 steps, guidance 4.0 (high noise) and 3.0 (low noise), which
    # WanPipeline takes as guidance_scale and guidance_scale_2.
    sampling = SamplingDefaults(sampler="unipc", steps=40, guidance=4.0, expert_guidance=(("low", 3.0),))
    # docs/method.md ("Two experts"): the subject's identity adapters on both experts (shape
    # is laid out at high noise, texture refined at low); the motion adapters on the
    # high-noise expert only, where layout and motion are decided.
    default_experts: ClassVar[Mapping[AdapterKind, tuple[str, ...]]] = {
        "identity": ("high", "low"),
        "motion": ("high",),
    }

    @classmethod
    def family(cls) -> DenoiserFamily:
        from dv_wan.family import WAN22_A14B

        return WAN22_A14B


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
    tiny_version: ClassVar[tiny.TinyVersion] = "2.1"
    tiny_revision: ClassVar[str] = tiny.TINY_WAN_REVISION

    def build_denoiser(self, device: str = "meta") -> nn.Module:
        import torch
        from diffusers import WanTransformer3DModel

        channels = configs.VAE_CONFIGS[self.size]["z_dim"]
        with torch.device(device):
            experts = [WanTransformer3DModel(**tiny.tiny_transformer_config(channels)) for _ in self._expert_folders()]
        model: nn.Module = loading.join_experts(experts)
        return model

    def fingerprint(self) -> Fingerprint:

        if self.path is not None:
            return loading.fingerprint(self.name, "local", "main", self.path, False, self.size)
        return Fingerprint(self.name, "dv_wan.tiny", self.tiny_revision)

    def fetch_weights(self) -> None:
        if self.path is not None:  # else built on the fly
            loading.locate(self.hub_id, self.hub_revision, self.path, self.size)

    def _parts(self, device: torch.device, dtype: torch.dtype) -> WanParts:

        if self.path is not None:
            pipeline, appearance = loading.locate(self.hub_id, self.hub_revision, self.path, self.size)
            return loading.load_folder(pipeline, appearance, device, dtype, self.size)
        return tiny.tiny_parts(device, dtype, self.tiny_version)


class TinyWan22Backbone(TinyWanBackbone, Wan22TI2V5BBackbone):
    """The tiny Wan with TI2V-5B's differences: Wan 2.2's VAE (48 channels, 16x), per-token
    timesteps, flow shift 5.0, sizes multiples of 32, 24 fps. Tiny-wan's everything else."""

    name = "tiny-wan2.2-5b"
    description = "random-weight Wan 2.2 TI2V-5B-shaped model for tests (no download)"
    # Height and width differ so that a swapped pair cannot pass; 2x4 latents, 1x2 tokens a frame.
    video_format = VideoFormat(height=32, width=64, frames=9, fps=24)
    motion_frames = 9
    motion_fps = 24
    tiny_version = "2.2"
    tiny_revision = tiny.TINY_WAN22_REVISION


class TinyWan22A14BBackbone(TinyWanBackbone, Wan22A14BBackbone):
    """The tiny Wan with T2V-A14B's two experts (two tiny transformers of the same classes at
    the same boundary, 875) and its sampling defaults; tiny-wan's everything else."""

    name = "tiny-wan2.2-a14b"
    description = "random-weight Wan 2.2 T2V-A14B-shaped model for tests, two tiny experts (no download)"
    tiny_version = "a14b"
    tiny_revision = tiny.TINY_WAN22_A14B_REVISION
