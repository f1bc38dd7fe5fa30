"""Adapters as registry entries. Writing: a finished run becomes a new version (the adapter,
the token, the reference images and a preview) plus its intermediate checkpoints as `stepS`
tags. Reading: the tensors and reference images compose attaches."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from dreamvideo_cli.adapters import AdapterSet
from dreamvideo_cli.backbone import Backbone
from dreamvideo_cli.learn_inputs import check_kind_of_name
from dv_registry import PNG, SAFETENSORS, NewEntry, NewFile, NotFoundError
from dv_registry.refs import check_name

REFERENCE_SIDE = 512  # reference images are kept at most this size on their short side

if TYPE_CHECKING:
    from dv_registry import Kind, Manifest, Registry


def check_new_name(registry: Registry, kind: str, name: str) -> None:
    """Refuse, before any training, a name that is invalid or already the other kind."""
    check_name(name)
    try:
        existing = registry.resolve(name)
    except NotFoundError:
        return
    check_kind_of_name(existing, kind)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Safetensors bytes (never a pickle) of CPU copies of `tensors`."""
    from safetensors.torch import save

    return save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)


def adapter_spec(adapters: AdapterSet) -> dict[str, Any]:
    return {
        "kind": adapters.kind,
        "sites": len(adapters.sites),
        "widths": sorted({s.width for s in adapters.sites}),
        "condition_dim": adapters.condition_dim,
        "format": "dreamvideo-adapter/1",
        **adapters.spec(),  # bottleneck and condition placement, where not the paper's
    }


def _reference_png(image: Image.Image) -> bytes:
    scale = REFERENCE_SIDE / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return png_bytes(image)


def store_adapter(
    registry: Registry,
    *,
    kind: Kind,
    name: str,
    backbone: Backbone,
    adapters: AdapterSet,
    extra_tensors: dict[str, torch.Tensor] | None,
    checkpoints: dict[str, Path],
    fields: dict[str, Any],
    reference_images: list[tuple[Path, Image.Image]],
    preview: Image.Image,
) -> Manifest:
    """Add a new version of `name` (and its checkpoints) to the registry; returns the manifest."""
    fingerprint = backbone.fingerprint().as_dict()
    metadata = {"dv_kind": kind, "dv_name": name, "backbone": backbone.name}
    shared: list[Any] = [NewFile("preview", "preview.png", png_bytes(preview), PNG)]
    used: set[str] = set()
    for i, (path, image) in enumerate(reference_images):
        filename = f"{i:02d}-{Path(path).stem}.png"
        if filename in used:
            filename = f"{i:02d}-{i}.png"
        used.add(filename)
        shared.append(NewFile("reference_image", filename, _reference_png(image), PNG))
    if extra_tensors:
        shared.append(
            NewFile(
                "token_embedding", "token_embedding.safetensors", tensors_to_bytes(extra_tensors, metadata), SAFETENSORS
            )
        )

    common = {
        **fields,
        "backbone": fingerprint,
        "adapter": adapter_spec(adapters),
        "parameter_count": adapters.parameter_count(),
    }

    def entry(adapter_bytes: bytes, step_note: dict[str, Any]) -> NewEntry:
        files = [NewFile("adapter", "adapter.safetensors", adapter_bytes, SAFETENSORS), *shared]
        return NewEntry(files=files, fields={**common, "training": {**common.get("training", {}), **step_note}})

    final = entry(tensors_to_bytes(adapters.adapter_state_dict(), metadata), {})
    extra = {
        tag: entry(path.read_bytes(), {"checkpoint_step": int(tag.removeprefix("step"))})
        for tag, path in checkpoints.items()
    }
    manifest = registry.add_version(kind, name, final, checkpoints=extra)
    # `stepS` moves with each new version, like `latest`; `vN-stepS` keeps this one's.
    for tag in extra:
        registry.tag(f"{name}:{tag}", f"{name}:{manifest.tag}-{tag}")
    return manifest


def load_adapter_tensors(registry: Registry, manifest: Any, role: str = "adapter") -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    data = registry.read_file(manifest, role)
    return load(data)


def reference_images(registry: Registry, manifest: Any) -> list[Image.Image]:
    out = []
    for entry in manifest.files_with("reference_image"):
        with Image.open(io.BytesIO(registry.blob_path(entry.digest).read_bytes())) as img:
            out.append(img.convert("RGB"))
    return out
