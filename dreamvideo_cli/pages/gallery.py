"""`dv gallery`: one static page of the registry. Each subject with its reference photos,
token, versions and checkpoint tags; each motion with its preview and phrase; each with its
backbone, the command that composes with it, and a link to the run that made it.

Nothing is copied: images are the registry's own blobs, linked by their paths (relative to
the page when a relative path exists, else file:// URIs), so the page costs a few kilobytes
however large the registry. Blobs have no file extension; browsers sniff PNG and JPEG from
their bytes. A gallery written elsewhere keeps working only while the registry stays put.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from dreamvideo_cli.pages.html import esc, link, page, write_page
from dreamvideo_cli.pages.run_page import write_run_page
from dreamvideo_cli.run_layout import runs_folder
from dv_registry import JPEG, PNG

if TYPE_CHECKING:
    from dv_registry import Manifest, Registry

IMAGE_TYPES = (PNG, JPEG)
MAX_PHOTOS = 8  # per entry: a gallery is a look at each, not the whole dataset


def compose_command(manifest: Manifest) -> str:
    """A `dv compose` line using this entry (the other side left out with `-`)."""
    if manifest.kind == "subject":
        return shlex.join(["dv", "compose", manifest.ref, "-", "in the snow"])
    return shlex.join(["dv", "compose", "-", manifest.ref, "a dog"])


def _versions(manifests: list[Manifest]) -> tuple[list[str], list[str]]:
    """Version tags (`v1`, `latest`...) and checkpoint tags (`step500`, `v1-step500`) of `name`."""
    tags = [m.tag for m in manifests]
    checkpoints = [t for t in tags if "step" in t]
    return [t for t in tags if t not in checkpoints], checkpoints


def _entry(
    registry: Registry, latest: Manifest, tags: list[Manifest], out_dir: Path, run_links: dict[str, Path]
) -> str:
    versions, checkpoints = _versions(tags)
    images = [f for f in latest.files if f.media_type in IMAGE_TYPES]
    photos = [f for f in images if f.role != "preview"][:MAX_PHOTOS]
    previews = [f for f in images if f.role == "preview"]
    pictures = "".join(
        f'<img class="thumb" src="{esc(link(registry.blob_path(f.digest), out_dir))}" '
        f'alt="{esc(f.role + ": " + f.filename)}" title="{esc(f.filename)}">'
        for f in [*previews, *photos]
    )
    backbone = latest.backbone.get("backbone", "?")
    facts = [
        f"<tr><th>backbone</th><td>{esc(backbone)} <span class=muted>{esc(latest.backbone.get('model_id', ''))}</span></td></tr>"
    ]
    if latest.token:
        facts.append(f"<tr><th>token</th><td><code>{esc(latest.token)}</code>"
                     + (f" <span class=muted>(from {esc(latest.init_word)})</span>" if latest.init_word else "")
                     + "</td></tr>")  # fmt: skip
    if latest.phrase:
        facts.append(f"<tr><th>phrase</th><td>{esc(latest.phrase)}</td></tr>")
    facts.append(f"<tr><th>versions</th><td>{esc(', '.join(versions)) or '-'}</td></tr>")
    if checkpoints:
        facts.append(f"<tr><th>checkpoints</th><td>{esc(', '.join(checkpoints))}</td></tr>")
    facts.append(f"<tr><th>compose</th><td><code>{esc(compose_command(latest))}</code></td></tr>")
    run = latest.training.get("run")
    if isinstance(run, str):
        target = run_links.get(run)
        cell = (
            f'<a href="{esc(link(target, out_dir))}">{esc(run)}</a>'
            if target is not None
            else f"{esc(run)} <span class=muted>(folder removed)</span>"
        )
        facts.append(f"<tr><th>run</th><td>{cell}</td></tr>")
    if latest.description:
        facts.append(f"<tr><th>about</th><td>{esc(latest.description)}</td></tr>")
    return (
        f'<div class="card" id="{esc(latest.kind)}-{esc(latest.name)}"><h2>{esc(latest.name)} '
        f'<span class=muted>{esc(latest.ref)}</span></h2><div class="strip">{pictures}</div>'
        f"<table>{''.join(facts)}</table></div>"
    )


def gallery_page(registry: Registry, out_dir: Path, *, run_pages: bool = True) -> str:
    """The page's HTML. `run_pages`: also (re)write each linked run's own page."""
    by_name: dict[tuple[str, str], list[Manifest]] = defaultdict(list)
    for manifest in registry.list():
        by_name[(manifest.kind, manifest.name)].append(manifest)
    runs = runs_folder(registry.home)
    run_links: dict[str, Path] = {}
    stored: dict[str, list[str]] = defaultdict(list)
    for manifests in by_name.values():
        for m in manifests:
            run = m.training.get("run")
            if isinstance(run, str) and "checkpoint_step" not in m.training:
                stored[run].append(m.ref)
    for run, refs in stored.items():
        folder = runs / run
        if "/" in run or "\\" in run or not (folder / "config.json").is_file():
            continue  # a run id is a folder name; anything else is not linked
        if run_pages:
            write_run_page(folder, stored=refs)
        run_links[run] = folder / "index.html"
    sections = []
    for kind, title in (("subject", "Subjects"), ("motion", "Motions")):
        names = sorted(name for k, name in by_name if k == kind)
        cards = []
        for name in names:
            tags = by_name[(kind, name)]
            latest = next((m for m in tags if m.tag == "latest"), tags[-1])
            cards.append(_entry(registry, latest, tags, out_dir, run_links))
        body = "".join(cards) or f"<p class=muted>no {kind}s yet (dv {kind} learn ...)</p>"
        sections.append(f"<h2>{title} ({len(names)})</h2>{body}")
    head = f"<h1>dv registry</h1><p class=muted>{esc(registry.home)}</p>"
    return page("dv registry", head + "".join(sections))


def write_gallery(registry: Registry, out_dir: Path, *, run_pages: bool = True) -> Path:
    """Write `out_dir/index.html` for `registry`; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_page(out_dir / "index.html", gallery_page(registry, out_dir, run_pages=run_pages))
