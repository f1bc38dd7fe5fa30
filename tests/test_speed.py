"""Speed and memory measures leave the math unchanged (equivalence, not timings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.families.unet3d import ChunkedAttnProcessor, chunk_temporal_attention, find_adapter_sites
from dreamvideo_cli.learn.loss import diffusion_loss
from dreamvideo_cli.speed import Checkpointed, gradient_checkpointing
from dreamvideo_cli.testing import TinyBackbone


def _grads(checkpointing: bool) -> tuple[float, dict[str, torch.Tensor]]:
    parts = TinyBackbone().load("cpu")
    motion = AdapterSet("motion", find_adapter_sites(parts.denoiser), condition_dim=parts.appearance_dim)
    with torch.no_grad():
        for p in motion.parameters():
            p.normal_(std=0.02, generator=torch.Generator().manual_seed(p.numel()))
    motion.attach(parts.denoiser)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 4, 16, 16, generator=g)
    context = torch.randn(2, 16, 32, generator=g)
    motion.set_appearance(torch.randn(2, parts.appearance_dim, generator=g))
    with gradient_checkpointing(parts.denoiser, parts.family, enabled=checkpointing):
        if checkpointing:
            assert any(isinstance(m, Checkpointed) for m in parts.denoiser.modules())
        loss = diffusion_loss(parts, x0, context, torch.Generator().manual_seed(1), 0.1)
        loss.backward()
    assert not any(isinstance(m, Checkpointed) for m in parts.denoiser.modules())
    motion.detach()
    return loss.item(), {n: p.grad.clone() for n, p in motion.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients() -> None:
    loss_a, grads_a = _grads(False)
    loss_b, grads_b = _grads(True)
    assert abs(loss_a - loss_b) < 1e-6
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-4), name


def test_chunked_temporal_attention_is_exact() -> None:
    parts = TinyBackbone().load("cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 16, 16, generator=g)
    t = torch.tensor([5, 900])
    context = torch.randn(2, 16, 32, generator=g)
    with torch.no_grad():
        before = parts.denoiser(x, t, encoder_hidden_states=context).sample
        # 2 videos x 16x16 positions = 512 sequences per temporal attention: chunks of 100.
        assert chunk_temporal_attention(parts.denoiser, chunk=100) > 0
        after = parts.denoiser(x, t, encoder_hidden_states=context).sample
    assert any(isinstance(getattr(m, "processor", None), ChunkedAttnProcessor) for m in parts.denoiser.modules())
    assert torch.allclose(before, after, atol=1e-5)


def test_learning_with_checkpointing_gives_the_same_adapter(tmp_path: object) -> None:
    """Over a short run the checkpointed training path and the plain one agree."""
    from pathlib import Path

    import numpy as np

    from dreamvideo_cli.learn import MotionConfig, learn_motion
    from dreamvideo_cli.media import write_video
    from dreamvideo_cli.registry_entries import load_adapter_tensors
    from dv_registry import Registry

    root = Path(str(tmp_path))
    clips = root / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    write_video(clips / "a.mp4", rng.integers(0, 255, (12, 40, 40, 3), dtype=np.uint8), fps=8)
    registry = Registry(root / "home")
    results = []
    for flag in (False, True):
        config = MotionConfig(
            backbone="tiny", steps=3, frames=4, save_every=0, seed=3, device="cpu", gradient_checkpointing=flag
        )
        manifest = learn_motion(clips, "wave", config, registry=registry)
        results.append(load_adapter_tensors(registry, manifest))
    plain, checkpointed = results
    for key in plain:
        assert torch.allclose(plain[key], checkpointed[key], atol=1e-6), key


@pytest.mark.slow
def test_compiled_learning_gives_the_same_subject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--compile` changes no result: the token and identity adapter learnt through the
    traced graph equal the eager ones (aot_eager: dynamo and AOT autograd, no codegen)."""
    import numpy as np
    from PIL import Image

    from dreamvideo_cli.learn import SubjectConfig, learn_subject
    from dreamvideo_cli.registry_entries import load_adapter_tensors
    from dreamvideo_cli.speed import COMPILE_BACKEND_ENV
    from dv_registry import Registry

    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    registry = Registry(tmp_path / "home")
    learnt = []
    for flag in (False, True):
        config = SubjectConfig(
            backbone="tiny",
            init_word="dog",
            embedding_steps=2,
            adapter_steps=2,
            batch_size=2,
            save_every=0,
            seed=3,
            device="cpu",
            compile=flag,
        )
        manifest = learn_subject(photos, f"cat-{int(flag)}", config, registry=registry)
        learnt.append(
            {**load_adapter_tensors(registry, manifest), **load_adapter_tensors(registry, manifest, "token_embedding")}
        )
    eager, compiled = learnt
    assert eager.keys() == compiled.keys()
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-5, atol=1e-6)
