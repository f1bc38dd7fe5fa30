"""CLIP-T, CLIP-I, DINO-I and temporal consistency, as the DreamVideo authors compute them.

With unit-length embeddings (f_i: frames, t: prompt, r_j: reference photos):

- CLIP-T  = mean_i cos(f_i, t)                      (CLIP ViT-B/32)
- CLIP-I  = mean_{i,j} cos(f_i, r_j)                (CLIP ViT-B/32)
- DINO-I  = mean_{i,j} cos(d_i, s_j)                (DINO ViT-S/16 CLS tokens)
- T.Cons  = mean_i cos(f_i, f_{i+1})                (CLIP ViT-B/32)

The authors' script writes CLIP-T and CLIP-I as a dot product with the mean of the
normalised frame embeddings; by linearity that is the same number.

Every metric takes an `encoder` so tests (and anyone with other weights) can inject one;
by default it is the process-wide encoder from `dv_metrics.weights`, loaded on first use.

`dv eval` makes every metric it needs and then prepares each; when weights are missing, the
first `prepare` names what every metric made but not yet loaded lacks (CLIP and DINO), in
one line, rather than one model per attempt.
"""

from __future__ import annotations

import gc
import weakref
from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.metrics import EvalSample, Metric

if TYPE_CHECKING:
    from dv_metrics.encoders import Embeddings, ImageEncoder, ImageTextEncoder
    from dv_metrics.weights import MetricWeights

# Metrics made without an encoder whose weights are not loaded yet (weak: a metric dropped
# unprepared is forgotten).
_unloaded: weakref.WeakSet[_WeightedMetric] = weakref.WeakSet()


class _WeightedMetric(Metric):
    """A metric whose encoder loads from `dv_metrics.weights` unless one is injected."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        _unloaded.add(self)

    @abstractmethod
    def _weights(self) -> MetricWeights:
        """The weights this metric's encoder loads."""

    @abstractmethod
    def _load(self) -> None:
        """Load the encoder (it raises MetricWeightsMissing when its weights are missing)."""

    def prepare(self) -> None:
        """Load the weights now, so a missing download fails before any work is done; the
        error names the weights of the other metrics made so far that are missing too."""
        from dv_metrics.weights import MetricWeightsMissing

        try:
            self._load()
        except MetricWeightsMissing as exc:
            gc.collect()  # metrics kept only by reference cycles (an old traceback) do not count
            others = [m._weights() for m in list(_unloaded) if m is not self]
            raise exc.also(others) from None


class _ClipMetric(_WeightedMetric):
    """A metric on CLIP ViT-B/32 embeddings."""

    def __init__(self, device: str = "cpu", encoder: ImageTextEncoder | None = None) -> None:
        super().__init__(device)
        self._encoder = encoder
        if encoder is not None:
            _unloaded.discard(self)

    @property
    def encoder(self) -> ImageTextEncoder:
        if self._encoder is None:
            from dv_metrics.weights import shared_clip_encoder

            self._encoder = shared_clip_encoder(self.device)
            _unloaded.discard(self)
        return self._encoder

    def _weights(self) -> MetricWeights:
        from dv_metrics.weights import CLIP_WEIGHTS

        return CLIP_WEIGHTS

    def _load(self) -> None:
        _ = self.encoder

    def frame_embeddings(self, sample: EvalSample) -> Embeddings:
        if len(sample.frames) == 0:
            raise DVError(f"{self.name}: the video has no frames", "check the file")
        return self.encoder.encode_images(list(sample.frames))


class ClipT(_ClipMetric):
    name = "clip-t"
    description = "text alignment: CLIP ViT-B/32 cosine of every frame with the prompt, averaged"
    needs: ClassVar[frozenset[str]] = frozenset({"prompt"})

    def score(self, sample: EvalSample) -> float:
        if not sample.prompt:
            raise DVError(f"{self.name} needs a prompt", "pass --prompt")
        text = self.encoder.encode_text([sample.prompt])[0]
        return float(np.mean(self.frame_embeddings(sample) @ text))


class ClipI(_ClipMetric):
    name = "clip-i"
    description = "subject fidelity: CLIP ViT-B/32 cosine of every frame with every reference photo, averaged"
    needs: ClassVar[frozenset[str]] = frozenset({"reference_images"})

    def score(self, sample: EvalSample) -> float:
        return _image_similarity(self.name, self.encoder, self.frame_embeddings(sample), sample)


class TemporalConsistency(_ClipMetric):
    name = "t-cons"
    description = "temporal consistency: CLIP ViT-B/32 cosine of consecutive frames, averaged"

    def score(self, sample: EvalSample) -> float:
        frames = self.frame_embeddings(sample)
        if len(frames) < 2:
            raise DVError(f"{self.name} needs a video of at least 2 frames", "score a longer video")
        return float(np.mean(np.sum(frames[:-1] * frames[1:], axis=1)))


class DinoI(_WeightedMetric):
    name = "dino-i"
    description = "subject fidelity: DINO ViT-S/16 cosine of every frame with every reference photo, averaged"
    needs: ClassVar[frozenset[str]] = frozenset({"reference_images"})

    def __init__(self, device: str = "cpu", encoder: ImageEncoder | None = None) -> None:
        super().__init__(device)
        self._encoder = encoder
        if encoder is not None:
            _unloaded.discard(self)

    @property
    def encoder(self) -> ImageEncoder:
        if self._encoder is None:
            from dv_metrics.weights import shared_dino_encoder

            self._encoder = shared_dino_encoder(self.device)
            _unloaded.discard(self)
        return self._encoder

    def _weights(self) -> MetricWeights:
        from dv_metrics.weights import DINO_WEIGHTS

        return DINO_WEIGHTS

    def _load(self) -> None:
        _ = self.encoder

    def score(self, sample: EvalSample) -> float:
        if len(sample.frames) == 0:
            raise DVError(f"{self.name}: the video has no frames", "check the file")
        frames = self.encoder.encode_images(list(sample.frames))
        return _image_similarity(self.name, self.encoder, frames, sample)


def _image_similarity(name: str, encoder: ImageEncoder, frames: Embeddings, sample: EvalSample) -> float:
    if not sample.reference_images:
        raise DVError(f"{name} needs the subject's reference photos", "pass --subject")
    references = encoder.encode_images(list(sample.reference_images))
    return float(np.mean(frames @ references.T))


METRICS: tuple[type[Metric], ...] = (ClipT, ClipI, DinoI, TemporalConsistency)
