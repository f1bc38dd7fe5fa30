"""The four metrics on constructed inputs whose answers are known, with tiny random encoders."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
import torch

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.metrics import EvalSample
from dv_metrics.encoders import (
    DINOEncoder,
    OpenCLIPEncoder,
    Preprocess,
    clip_preprocess,
    dino_preprocess,
)
from dv_metrics.metrics import ClipI, ClipT, DinoI, TemporalConsistency
from dv_metrics.testing import tiny_clip_model, tiny_clip_tokenizer, tiny_dino_model


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    yield


@pytest.fixture(scope="module")
def clip() -> OpenCLIPEncoder:
    return OpenCLIPEncoder(tiny_clip_model(), tiny_clip_tokenizer())


@pytest.fixture(scope="module")
def dino() -> DINOEncoder:
    return DINOEncoder(tiny_dino_model())


def _images(count: int, height: int = 40, width: int = 56, seed: int = 0) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _torchvision_pixels(image: npt.NDArray[np.uint8], preprocess: Preprocess) -> torch.Tensor:
    """The authors' pipeline, as torchvision runs it."""
    from PIL import Image
    from torchvision import transforms as T

    pipeline = T.Compose(
        [
            T.Resize(preprocess.resize, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(preprocess.crop),
            T.ToTensor(),
            T.Normalize(preprocess.mean, preprocess.std),
        ]
    )
    pixels: torch.Tensor = pipeline(Image.fromarray(image))
    return pixels


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.double(), dim=-1)


@pytest.mark.parametrize("shape", [(40, 56), (56, 40), (32, 32), (300, 451), (17, 90)])
@pytest.mark.parametrize(
    "preprocess", [clip_preprocess(32), dino_preprocess(32), clip_preprocess(224), dino_preprocess(224)]
)
def test_preprocessing_matches_torchvision(shape: tuple[int, int], preprocess: Preprocess) -> None:
    image = _images(1, *shape, seed=sum(shape))[0]
    ours = torch.from_numpy(preprocess(image))
    assert ours.shape == (3, preprocess.crop, preprocess.crop)
    torch.testing.assert_close(ours, _torchvision_pixels(image, preprocess), atol=1e-6, rtol=0)


def test_authors_sizes() -> None:
    assert clip_preprocess() == Preprocess(224, 224, clip_preprocess().mean, clip_preprocess().std)
    assert (dino_preprocess().resize, dino_preprocess().crop) == (256, 224)


def test_identical_frames_are_perfectly_consistent(clip: OpenCLIPEncoder) -> None:
    frames = np.repeat(_images(1), 6, axis=0)
    assert TemporalConsistency(encoder=clip).score(EvalSample(frames)) == pytest.approx(1.0, abs=1e-12)


def test_temporal_consistency_is_mean_cosine_of_consecutive_frames(clip: OpenCLIPEncoder) -> None:
    frames = _images(4)
    with torch.no_grad():
        pixels = torch.stack([_torchvision_pixels(f, clip.preprocess) for f in frames])
        emb = _unit(clip.model.encode_image(pixels))
    expected = float(torch.mean(torch.sum(emb[:-1] * emb[1:], dim=1)))
    assert TemporalConsistency(encoder=clip).score(EvalSample(frames)) == pytest.approx(expected, abs=1e-6)


def test_frame_equal_to_reference_scores_one(clip: OpenCLIPEncoder, dino: DINOEncoder) -> None:
    photo = _images(1, 48, 48)[0]
    sample = EvalSample(np.stack([photo, photo, photo]), reference_images=[photo])
    assert ClipI(encoder=clip).score(sample) == pytest.approx(1.0, abs=1e-12)
    assert DinoI(encoder=dino).score(sample) == pytest.approx(1.0, abs=1e-12)


def test_clip_t_is_the_cosine_computed_by_hand(clip: OpenCLIPEncoder) -> None:
    frames = _images(3)
    prompt = "a dog walking in the snow"
    with torch.no_grad():
        image = _unit(clip.model.encode_image(torch.stack([_torchvision_pixels(f, clip.preprocess) for f in frames])))
        text = _unit(clip.model.encode_text(tiny_clip_tokenizer()([prompt])))[0]
    by_hand = float(torch.mean(image @ text))
    # The authors' form: the text against the mean of the normalised frame embeddings.
    authors = float(text @ image.mean(dim=0))
    score = ClipT(encoder=clip).score(EvalSample(frames, prompt=prompt))
    assert score == pytest.approx(by_hand, abs=1e-6)
    assert score == pytest.approx(authors, abs=1e-6)


def test_image_similarity_averages_every_frame_reference_pair(clip: OpenCLIPEncoder, dino: DINOEncoder) -> None:
    frames, refs = _images(2, seed=1), list(_images(3, 64, 48, seed=2))
    with torch.no_grad():
        f = _unit(clip.model.encode_image(torch.stack([_torchvision_pixels(x, clip.preprocess) for x in frames])))
        r = _unit(clip.model.encode_image(torch.stack([_torchvision_pixels(x, clip.preprocess) for x in refs])))
        fd = _unit(
            dino.model(
                pixel_values=torch.stack([_torchvision_pixels(x, dino.preprocess) for x in frames])
            ).last_hidden_state[:, 0]
        )
        rd = _unit(
            dino.model(
                pixel_values=torch.stack([_torchvision_pixels(x, dino.preprocess) for x in refs])
            ).last_hidden_state[:, 0]
        )
    pairs = [float(f[i] @ r[j]) for i in range(2) for j in range(3)]
    dino_pairs = [float(fd[i] @ rd[j]) for i in range(2) for j in range(3)]
    sample = EvalSample(frames, reference_images=refs)
    assert ClipI(encoder=clip).score(sample) == pytest.approx(sum(pairs) / 6, abs=1e-6)
    assert DinoI(encoder=dino).score(sample) == pytest.approx(sum(dino_pairs) / 6, abs=1e-6)


def test_encoders_embed_each_distinct_image_once(clip: OpenCLIPEncoder) -> None:
    frames = _images(3, seed=7)
    calls: list[int] = []
    original = clip.model.encode_image

    def counting(pixels: torch.Tensor) -> torch.Tensor:
        calls.append(len(pixels))
        out: torch.Tensor = original(pixels)
        return out

    clip.model.encode_image = counting
    try:
        first = clip.encode_images([frames[0], frames[1], frames[0]])
        second = clip.encode_images(list(frames))
    finally:
        del clip.model.encode_image
    assert calls == [2, 1]  # frame 0 once, frame 1 once, then only frame 2 is new
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[1], second[1])


def test_missing_inputs_are_one_line_errors(clip: OpenCLIPEncoder) -> None:
    frames = _images(2)
    with pytest.raises(DVError, match="needs a prompt"):
        ClipT(encoder=clip).score(EvalSample(frames))
    with pytest.raises(DVError, match="reference photos"):
        ClipI(encoder=clip).score(EvalSample(frames))
    with pytest.raises(DVError, match="at least 2 frames"):
        TemporalConsistency(encoder=clip).score(EvalSample(frames[:1]))


def test_registered_through_the_public_hook_without_torch() -> None:
    code = (
        "import sys\n"
        "from dv_metrics import plugin\n"
        "plugin.register_metrics(lambda cls: None)\n"
        "print('torch' in sys.modules)\n"
        "from dreamvideo_cli.plugins import get_metrics\n"
        "print(sorted(n for n, r in get_metrics().items() if r.distribution == 'dv-metrics'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    torch_loaded, names = done.stdout.split("\n")[:2]
    assert torch_loaded == "False"
    assert names == "['clip-i', 'clip-t', 'dino-i', 't-cons']"  # through the entry point


def test_metric_contract() -> None:
    assert ClipT.needs == {"prompt"}
    assert ClipI.needs == DinoI.needs == {"reference_images"}
    assert TemporalConsistency.needs == frozenset()
    assert all(m.higher_is_better for m in (ClipT, ClipI, DinoI, TemporalConsistency))
