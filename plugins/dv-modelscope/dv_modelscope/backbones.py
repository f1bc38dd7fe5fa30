"""ModelScopeT2V and Zeroscope: diffusers text-to-video pipelines as dv backbones.

This module is imported when dv registers plugins, so it imports nothing heavy: torch,
diffusers, transformers and open_clip are imported inside the methods that need them.

Where the weights come from, in order:
- `random_weights=True`: the full-size architecture with random weights, nothing read;
- `path=DIR`: a local diffusers folder (unet/, vae/, text_encoder/, tokenizer/), with the
  appearance encoder in DIR/image_encoder/ if it is there, else from the Hugging Face cache;
- otherwise the Hugging Face cache, downloading what is missing unless HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dreamvideo_cli.backbone import Backbone, Components, DenoiserFamily, Fingerprint, VideoFormat
from dreamvideo_cli.errors import DVError
from dreamvideo_cli.hub import local_identity
from dreamvideo_cli.objectives import NoiseSchedule
from dv_modelscope import configs
from dv_modelscope.hub import (
    FP16_SAFETENSORS,
    OPEN_CLIP_CONFIG,
    PICKLE,
    PIPELINE_MODELS,
    HubSource,
    OpenCLIPLayout,
    PipelineLayout,
    WeightsFormat,
    find_weights,
    list_files,
    missing_weights_error,
    offline,
    resolve,
    snapshot_identity,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

RANDOM_REVISION = "random"
RANDOM_SEED = 0
# Sub-folders of a local backbone folder that make up its identity.
_FINGERPRINTED_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "image_encoder")


class DiffusersT2VBackbone(Backbone):
    """A frozen diffusers `TextToVideoSDPipeline`-layout model with an OpenCLIP appearance
    encoder. Subclasses name the hub repository and the video format; the architecture is
    embedded (class attributes) so it can be built without any download."""

    hub_id: ClassVar[str]
    # Older ids of the same repository, under which a Hugging Face cache may hold it; looked
    # up after `hub_id`. Downloads and fetch commands always use `hub_id`.
    hub_aliases: ClassVar[tuple[str, ...]] = ()
    hub_revision: ClassVar[str] = "main"
    label: ClassVar[str]  # how messages name the model, e.g. "ModelScopeT2V"
    # The format the hub repository publishes and we prefer (other formats are accepted).
    weights_format: ClassVar[WeightsFormat] = FP16_SAFETENSORS
    unet_config: ClassVar[dict[str, Any]] = configs.UNET_CONFIG
    vae_config: ClassVar[dict[str, Any]] = configs.VAE_CONFIG
    text_encoder_config: ClassVar[dict[str, Any]] = configs.TEXT_ENCODER_CONFIG
    appearance_hub_id: ClassVar[str] = configs.OPEN_CLIP_HUB_ID
    appearance_arch: ClassVar[str] = configs.OPEN_CLIP_ARCH
    appearance_dim = configs.APPEARANCE_DIM
    schedule = NoiseSchedule(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
    )

    def __init__(self, *, path: str | None = None, random_weights: bool = False) -> None:
        super().__init__(path=path, random_weights=random_weights)
        self._loaded: tuple[str, str] | None = None  # (hub id, commit) that `load` read

    # --- the contract ----------------------------------------------------------------------

    @classmethod
    def family(cls) -> DenoiserFamily:
        from dreamvideo_cli import UNET3D  # imports torch: not at registration

        return UNET3D

    def build_denoiser(self, device: str = "meta") -> nn.Module:
        import torch
        from diffusers import UNet3DConditionModel

        with torch.device(device):
            unet: Any = UNet3DConditionModel(**self.unet_config)
        return unet

    def fingerprint(self) -> Fingerprint:
        """backbone name, hub id (or "local") and the commit of the cached snapshot, found
        without network access. The hub id is the one the snapshot is cached under: `hub_id`,
        or one of `hub_aliases` when only that one holds it. Raises MissingWeightsError when
        offline with nothing cached, since no revision can be named then and `load` would fail
        anyway; the error names the appearance encoder too when it is missing as well, so one
        line lists everything to fetch."""
        if self.random_weights:
            return Fingerprint(self.name, self.hub_id, RANDOM_REVISION, random_weights=True)
        if self.path is not None:
            return Fingerprint(self.name, *local_identity(self._local_root(), _FINGERPRINTED_PARTS))
        if self._loaded is not None:
            return Fingerprint(self.name, *self._loaded)
        source = self._pipeline_source()
        cached = source.cached_identity()
        if cached is None:
            if offline():
                appearance = self._appearance_source()
                absent = appearance.missing_in(appearance.cached_folder())
                raise missing_weights_error([(source, ["everything"]), *([(appearance, absent)] if absent else [])])
            # not downloaded yet: `load` resolves the commit
            return Fingerprint(self.name, self.hub_id, self.hub_revision)
        return Fingerprint(self.name, *cached)

    def fetch_weights(self) -> None:
        if not self.random_weights:
            self._locate()  # the pipeline and the appearance encoder, named together when missing

    def load(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Components:
        import torch

        device = torch.device(device)
        dtype = dtype or torch.float32
        if self.random_weights:
            unet, vae, text_encoder, tokenizer, appearance = self._build_random(device, dtype)
        else:
            pipeline_folder, appearance_folder = self._locate()
            unet, vae, text_encoder, tokenizer = self._load_pipeline(pipeline_folder, dtype)
            appearance = self._load_appearance(appearance_folder, device, dtype)
        for module in (unet, vae, text_encoder, appearance):
            module.requires_grad_(False).eval().to(device=device, dtype=dtype)
        from dreamvideo_cli.codecs import FrameVAECodec
        from dreamvideo_cli.text import CLIPTextEncoding

        return Components(
            denoiser=unet,
            family=self.family(),
            objective=self.training_objective(),
            codec=FrameVAECodec(vae, scale_factor=configs.VAE_SCALE_FACTOR),
            text=CLIPTextEncoding(tokenizer, text_encoder),
            appearance_encoder=appearance,
            appearance_dim=self.appearance_dim,
            device=device,
            dtype=dtype,
        )

    @classmethod
    def same_weights(cls, a: Fingerprint, b: Fingerprint) -> bool:
        """The same commit cached under the current id or an older one is the same weights."""

        def canonical(fp: Fingerprint) -> Fingerprint:
            return replace(fp, model_id=cls.hub_id) if fp.model_id in cls.hub_aliases else fp

        return canonical(a) == canonical(b)

    # --- where the weights are -------------------------------------------------------------

    def _pipeline_source(self) -> HubSource:
        layout = PipelineLayout(self.weights_format)
        return HubSource(self.hub_id, self.hub_revision, layout, f"{self.label} weights", self.hub_aliases)

    def _appearance_source(self) -> HubSource:
        return HubSource(
            self.appearance_hub_id, "main", OpenCLIPLayout(), f"the {self.appearance_arch} appearance encoder"
        )

    def _local_root(self) -> Path:
        assert self.path is not None
        root = Path(self.path).expanduser()
        if not root.is_dir():
            raise DVError(
                f"--backbone-path {self.path} is not a folder",
                "pass a diffusers folder with unet/, vae/, text_encoder/, tokenizer/",
            )
        return root

    def _locate(self) -> tuple[Path, Path]:
        """The pipeline folder and the appearance encoder's folder, fetched if need be."""
        if self.path is None:
            pipeline_folder, appearance_folder = resolve([self._pipeline_source(), self._appearance_source()])
            # A snapshot in the cache: found under hub_id or an alias, or just downloaded.
            self._loaded = snapshot_identity(pipeline_folder) or (self.hub_id, pipeline_folder.name)
            return pipeline_folder, appearance_folder
        root = self._local_root()
        missing = PipelineLayout(self.weights_format).plan(list_files(root)).missing
        if missing:
            raise DVError(
                f"--backbone-path {root} is not a complete diffusers folder: no {', '.join(missing)}",
                "it needs unet/, vae/, text_encoder/ (config.json and weights each) and tokenizer/",
            )
        local_encoder = root / "image_encoder"
        if (local_encoder / OPEN_CLIP_CONFIG).is_file() or (local_encoder / "config.json").is_file():
            return root, local_encoder
        alternative = f"put an OpenCLIP checkpoint (open_clip_config.json and weights) in {local_encoder}"
        (appearance_folder,) = resolve([self._appearance_source()], alternative)
        return root, appearance_folder

    # --- building and loading -------------------------------------------------------------

    def _load_pipeline(self, root: Path, dtype: torch.dtype) -> tuple[Any, Any, Any, Any]:
        from diffusers import AutoencoderKL, UNet3DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        files = list_files(root)

        def weights(folder: str) -> dict[str, Any]:
            fmt = find_weights(files, folder, PIPELINE_MODELS[folder], self.weights_format)
            assert fmt is not None  # _locate checked the folder
            return {"variant": fmt.variant, "use_safetensors": fmt.safetensors}

        unet = UNet3DConditionModel.from_pretrained(root / "unet", torch_dtype=dtype, **weights("unet"))
        vae = AutoencoderKL.from_pretrained(root / "vae", torch_dtype=dtype, **weights("vae"))
        text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder", dtype=dtype, **weights("text_encoder"))
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
        return unet, vae, text_encoder, tokenizer

    def _load_appearance(self, folder: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
        from dv_modelscope.appearance import load_open_clip_encoder, load_transformers_encoder

        if (folder / OPEN_CLIP_CONFIG).is_file():
            return load_open_clip_encoder(folder, device, dtype)
        return load_transformers_encoder(folder, device, dtype)

    def _build_random(self, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any, Any, Any, nn.Module]:
        """Full-size parts with random weights, built on `device` (seeded: the same weights
        every run on the same kind of device)."""
        import open_clip
        import torch
        from diffusers import AutoencoderKL, UNet3DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from dv_modelscope.appearance import random_open_clip_encoder
        from dv_modelscope.text import clip_tokenizer

        tokenizer = clip_tokenizer(configs.TOKENIZER_MAX_LENGTH)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(RANDOM_SEED)
            # Each part is cast as soon as it is built, so the fp32 copies never coexist.
            with torch.device(device):
                unet: Any = UNet3DConditionModel(**self.unet_config)
                unet = unet.to(dtype)
                vae: Any = AutoencoderKL(**self.vae_config)
                vae = vae.to(dtype)
                text_encoder: Any = CLIPTextModel(CLIPTextConfig(**self.text_encoder_config))
                text_encoder = text_encoder.to(dtype)
            model_cfg = open_clip.get_model_config(self.appearance_arch)
            appearance = random_open_clip_encoder(model_cfg, device, dtype)
        return unet, vae, text_encoder, tokenizer, appearance


class ModelScopeBackbone(DiffusersT2VBackbone):
    name = "modelscope"
    description = "ModelScopeT2V 1.7B (ali-vilab/text-to-video-ms-1.7b), the paper's backbone"
    video_format = VideoFormat(height=256, width=256, frames=32, fps=8)
    hub_id = "ali-vilab/text-to-video-ms-1.7b"
    # The repository's id before its organisation was renamed: the Hub still redirects it,
    # many diffusers examples use it, and a cache filled through it holds the same files.
    hub_aliases = ("damo-vilab/text-to-video-ms-1.7b",)
    label = "ModelScopeT2V"
    weights_format = FP16_SAFETENSORS  # the repository publishes variant="fp16" safetensors


class ZeroscopeBackbone(DiffusersT2VBackbone):
    name = "zeroscope"
    description = "Zeroscope v2 576w (cerspense/zeroscope_v2_576w), ModelScope fine-tuned at 576x320"
    # Trained on 24-frame clips at 576x320; no frame rate is published, and its examples
    # (and ModelScope, which it fine-tunes) use 8 fps.
    video_format = VideoFormat(height=320, width=576, frames=24, fps=8)
    hub_id = "cerspense/zeroscope_v2_576w"
    label = "Zeroscope v2 576w"
    weights_format = PICKLE  # the repository's diffusers folders hold only .bin files
