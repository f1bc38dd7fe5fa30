"""The `toyworld` backbone: the toy world's pretrained text-to-video model, offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dreamvideo_cli.backbone import Backbone, Components, DenoiserFamily, Fingerprint, VideoFormat
from dreamvideo_cli.errors import MissingWeightsError
from dv_toyworld import world
from dv_toyworld.schedule import APPEARANCE_DIM, TOY_SCHEDULE

# The committed weights come from two runs: the first, seven-colour world, then gamut colours.
PRETRAIN_COMMANDS = (
    "uv run python -m dv_toyworld.pretrain --seed 0 --steps 8000 --palette --output {first}",
    "uv run python -m dv_toyworld.pretrain --seed 0 --init {first} --steps 3000 --output {path}",
)
WEIGHTS_ENV = "DV_TOYWORLD_WEIGHTS"  # another weights file, e.g. one being trained


class ToyWorldBackbone(Backbone):
    """A 5M-parameter UNet3D pretrained on the toy world by `python -m dv_toyworld.pretrain`.

    `path` (or $DV_TOYWORLD_WEIGHTS) may name another weights file written by the pretrain
    script; `random_weights` gives the same architecture untrained."""

    name = "toyworld"
    description = "tiny text-to-video model of a synthetic world of moving shapes (embedded, offline)"
    video_format = VideoFormat(height=world.SIZE, width=world.SIZE, frames=world.FRAMES, fps=world.FPS)
    appearance_dim = APPEARANCE_DIM
    schedule = TOY_SCHEDULE  # dv_toyworld.schedule says why v-prediction

    @classmethod
    def family(cls) -> DenoiserFamily:
        from dreamvideo_cli import UNET3D  # imports torch: not at registration

        return UNET3D

    def weights_path(self) -> Path:
        from dv_toyworld import model

        if self.path is not None:
            return Path(self.path)
        return Path(os.environ.get(WEIGHTS_ENV) or model.WEIGHTS_FILE)

    def build_denoiser(self, device: str = "meta") -> Any:
        import torch

        from dv_toyworld import model

        with torch.device(device):
            return model.toy_unet()

    def fingerprint(self) -> Fingerprint:
        if self.random_weights:
            return Fingerprint(self.name, "dv_toyworld", "random-seed0", random_weights=True)
        path = self.weights_path()
        if not path.is_file():
            raise self._missing(path)
        from dv_toyworld import model

        return Fingerprint(self.name, "dv_toyworld", model.file_digest(path)[:16])

    def _missing(self, path: Path) -> MissingWeightsError:
        return MissingWeightsError(f"the toyworld weights {path} are missing", retrain_hint(path))

    def load(self, device: Any, dtype: Any = None) -> Components:
        import torch

        from dreamvideo_cli import quiet_libraries
        from dv_toyworld import model

        quiet_libraries()
        dtype = dtype or torch.float32
        parts = model.build(seed=0)
        if not self.random_weights:
            path = self.weights_path()
            if not path.is_file():
                raise self._missing(path)
            from safetensors import SafetensorError

            try:
                model.load_into(path, parts)
            except (ValueError, RuntimeError, OSError, SafetensorError) as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # errors are one line
                raise MissingWeightsError(
                    f"cannot load the toyworld weights {path}: {reason}",
                    retrain_hint(path),
                ) from None
        device = torch.device(device)
        if device.type == "cpu":
            model.attention_for_cpu(parts["unet"])
        vae = model.SpaceToDepthVAE()
        for m in (parts["unet"], parts["text_encoder"], parts["appearance"], vae):
            m.requires_grad_(False).eval().to(device=device, dtype=dtype)
        from dreamvideo_cli.codecs import FrameVAECodec
        from dreamvideo_cli.text import CLIPTextEncoding

        # A space-to-depth VAE: 3 * f * f channels, and masks mapped pixel-exactly.
        codec = FrameVAECodec(vae, 1.0, model.LATENT_FACTOR, 3 * model.LATENT_FACTOR**2, exact_masks=vae.encode_mask)
        return Components(
            denoiser=parts["unet"],
            family=self.family(),
            objective=self.training_objective(),
            codec=codec,
            text=CLIPTextEncoding(parts["tokenizer"], parts["text_encoder"]),
            appearance_encoder=parts["appearance"],
            appearance_dim=self.appearance_dim,
            device=device,
            dtype=dtype,
        )


def retrain_hint(path: Path) -> str:
    """How to make the weights at `path` again: the two runs docs/toyworld.md records."""
    first = path.with_name("toyworld-8000.safetensors")
    commands = (c.format(first=first, path=path) for c in PRETRAIN_COMMANDS)
    return "train them with `{}` then `{}` (about 95 + 32 min on a CPU core; docs/toyworld.md)".format(*commands)
