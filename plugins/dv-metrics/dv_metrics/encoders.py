"""The encoders behind the metrics, with the authors' preprocessing.

The authors' script (ali-vilab/VGen `metric/cal_metric_DreamVideo.py`) feeds every frame
and every reference photo through a PIL pipeline before its encoder:

- CLIP ViT-B/32: resize the short side to 224 (bicubic), centre-crop 224, scale to [0, 1],
  normalise with OpenAI's mean and std.
- DINO ViT-S/16: resize the short side to 256 (bicubic), centre-crop 224, normalise with
  ImageNet's mean and std; the embedding is the final-norm CLS token.

`Preprocess` reproduces those steps (torchvision's size rounding included). Encoders
return L2-normalised float64 embeddings as numpy arrays, so each metric is a few dot
products, and they remember what they encoded: CLIP-T, CLIP-I and temporal consistency
all embed the same frames, and every video of a subject shares its reference photos.
Nothing here imports torch at module level.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

if TYPE_CHECKING:
    import torch

Embeddings = npt.NDArray[np.float64]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEncoder(Protocol):
    """Anything that turns RGB images into unit-length embeddings."""

    def encode_images(self, images: Sequence[npt.NDArray[np.uint8]]) -> Embeddings:
        """uint8 [H, W, 3] images -> float64 [N, D], each row of length 1."""
        ...


class ImageTextEncoder(ImageEncoder, Protocol):
    """A joint image-text embedding space (CLIP)."""

    def encode_text(self, texts: Sequence[str]) -> Embeddings:
        """Texts -> float64 [N, D], each row of length 1."""
        ...


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side (bicubic), centre-crop a square, normalise per channel."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """uint8 [H, W, 3] -> float32 [3, crop, crop]."""
        pil = Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")
        width, height = pil.size
        # torchvision's Resize(int): the short side becomes `resize`, the long side is truncated.
        if width <= height:
            size = (self.resize, int(self.resize * height / width))
        else:
            size = (int(self.resize * width / height), self.resize)
        if size != pil.size:
            pil = pil.resize(size, Image.Resampling.BICUBIC)
        width, height = pil.size
        # torchvision's CenterCrop rounds the offsets the same way.
        top = round((height - self.crop) / 2.0)
        left = round((width - self.crop) / 2.0)
        pil = pil.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(pil, dtype=np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        normalised: npt.NDArray[np.float32] = ((pixels - mean) / std).transpose(2, 0, 1)
        return np.ascontiguousarray(normalised)


def clip_preprocess(
    image_size: int = 224, mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD
) -> Preprocess:
    return Preprocess(image_size, image_size, _triple(mean), _triple(std))


def dino_preprocess(image_size: int = 224) -> Preprocess:
    # The authors resize to 256 before a 224 crop; keep that ratio for other input sizes.
    return Preprocess(round(image_size * 256 / 224), image_size, IMAGENET_MEAN, IMAGENET_STD)


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def _unit_rows(vectors: npt.NDArray[Any]) -> Embeddings:
    rows = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    unit: Embeddings = rows / np.maximum(norms, 1e-12)
    return unit


def _image_key(image: npt.NDArray[np.uint8]) -> bytes:
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(array.data, digest_size=20)
    digest.update(repr((array.shape, array.dtype.str)).encode())
    return digest.digest()


class _EmbeddingCache:
    """A bounded least-recently-used map from an input's key to its embedding."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Any, Embeddings] = OrderedDict()

    def get(self, key: Any) -> Embeddings | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: Any, value: Embeddings) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class TorchImageEncoder:
    """Shared machinery: preprocessing, batching, no-grad inference, caching."""

    def __init__(
        self,
        model: Any,
        preprocess: Preprocess,
        device: str = "cpu",
        batch_size: int = 32,
        cache_size: int = 4096,
    ) -> None:
        self.model = model.to(device).eval()
        self.preprocess = preprocess
        self.device = device
        self.batch_size = batch_size
        self._images = _EmbeddingCache(cache_size)

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_images(self, images: Sequence[npt.NDArray[np.uint8]]) -> Embeddings:
        keys = [_image_key(np.asarray(image)) for image in images]
        found: dict[bytes, Embeddings] = {}
        missing: dict[bytes, npt.NDArray[np.uint8]] = {}
        for key, image in zip(keys, images, strict=True):
            cached = self._images.get(key)
            if cached is not None:
                found[key] = cached
            else:
                missing.setdefault(key, np.asarray(image))
        todo = list(missing.items())
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            embedded = self._embed_pixels([self.preprocess(image) for _, image in chunk])
            for (key, _), row in zip(chunk, embedded, strict=True):
                self._images.put(key, row)
                found[key] = row
        if not keys:
            return np.zeros((0, 0), dtype=np.float64)
        return np.stack([found[key] for key in keys])

    def _embed_pixels(self, arrays: list[npt.NDArray[np.float32]]) -> Embeddings:
        import torch

        pixels = torch.from_numpy(np.stack(arrays)).to(self.device)
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            out = self._forward_images(pixels.to(dtype))
        return _unit_rows(out.float().cpu().numpy())


class OpenCLIPEncoder(TorchImageEncoder):
    """An open_clip CLIP model: `encode_image` for frames and photos, `encode_text` for prompts."""

    def __init__(
        self,
        model: Any,
        tokenizer: Callable[[Sequence[str]], Any],
        preprocess: Preprocess | None = None,
        device: str = "cpu",
        **options: Any,
    ) -> None:
        if preprocess is None:
            preprocess = preprocess_for_open_clip(model)
        super().__init__(model, preprocess, device, **options)
        self.tokenizer = tokenizer
        self._texts = _EmbeddingCache(1024)

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.encode_image(pixels)
        return out

    def encode_text(self, texts: Sequence[str]) -> Embeddings:
        import torch

        found: dict[str, Embeddings] = {}
        for text in dict.fromkeys(texts):
            cached = self._texts.get(text)
            if cached is not None:
                found[text] = cached
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        if missing:
            tokens = self.tokenizer(missing).to(self.device)
            with torch.inference_mode():
                out = self.model.encode_text(tokens)
            for text, row in zip(missing, _unit_rows(out.float().cpu().numpy()), strict=True):
                self._texts.put(text, row)
                found[text] = row
        if not texts:
            return np.zeros((0, 0), dtype=np.float64)
        return np.stack([found[text] for text in texts])


def preprocess_for_open_clip(model: Any) -> Preprocess:
    """The authors' CLIP preprocessing at the model's own input size and normalisation."""
    import open_clip

    config = open_clip.get_model_preprocess_cfg(model)
    size = config.get("size", 224)
    if isinstance(size, list | tuple):
        size = size[0]
    return clip_preprocess(int(size), config.get("mean", OPENAI_MEAN), config.get("std", OPENAI_STD))


class DINOEncoder(TorchImageEncoder):
    """A transformers `ViTModel` trained with DINO; the embedding is the CLS token after the
    final LayerNorm, which is what the DINO repository's `vit_small` returns."""

    def __init__(self, model: Any, preprocess: Preprocess | None = None, device: str = "cpu", **options: Any) -> None:
        if preprocess is None:
            size = model.config.image_size
            preprocess = dino_preprocess(int(size[0] if isinstance(size, list | tuple) else size))
        super().__init__(model, preprocess, device, **options)

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(pixel_values=pixels).last_hidden_state[:, 0]
        return out
