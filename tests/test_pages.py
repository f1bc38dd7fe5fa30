"""The static pages (dreamvideo_cli.pages): escaping, structure, links, and in headless
Chromium that their videos load, play and stay in step and their images load."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dreamvideo_cli import media
from dreamvideo_cli.pages.html import esc, link
from dreamvideo_cli.pages.run_page import loss_svg, write_run_page
from dreamvideo_cli.pages.sweep_page import compose_command, write_sweep_page
from dv_registry import PNG, SAFETENSORS, NewEntry, NewFile, Registry

# A prompt that would run if a page printed it unescaped: the browser test looks for its mark.
EVIL = "a <script>document.documentElement.setAttribute('data-pwned','1')</script> & \"dog\""


def png(colour: tuple[int, int, int], size: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0\0\0\0"


class Page(HTMLParser):
    """Every element's tag and attributes, and the page's text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for t, attrs in self.elements if t == tag]


# --- fixtures ------------------------------------------------------------------------------------


def make_sweep(folder: Path, frames: int = 48) -> dict[str, Any]:
    """A 2x2 sweep folder as run_sweep writes it, with real H.264 videos (no model needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    cells = []
    for s in (0.5, 1.0):
        for m in (0.5, 1.0):
            video = np.zeros((frames, 64, 64, 3), np.uint8)
            for t in range(frames):
                video[t, 20:40, t % 54 : t % 54 + 10] = (255, int(200 * s), int(200 * m))
            cell_id = f"rex_step2-s{s:g}--slide_v1-m{m:g}"
            media.write_video(folder / f"{cell_id}.mp4", video, fps=8)
            cells.append({"subject": "rex:step2", "motion": "slide:v1", "subject_scale": s, "motion_scale": m,
                          "id": cell_id, "video": f"{cell_id}.mp4", "contact_sheet": f"{cell_id}.png",
                          "prompt": EVIL, "seed": 7, "scores": {"clip_t": s * m}})  # fmt: skip
    index = {"prompt": EVIL, "settings": {"seed": 7, "steps": 2, "fps": 8, "device": "cpu", "gif": False,
             "appearance_strength": 1.0, "blocks_to_swap": 0}, "best": cells[-1]["id"], "cells": cells}  # fmt: skip
    (folder / "index.json").write_text(json.dumps(index))
    return index


def make_run(home: Path, run_id: str = "20250101-000000-subject-rex-abcd") -> Path:
    folder = home / "runs" / run_id
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "previews").mkdir()
    config = {"embedding_steps": 2, "adapter_steps": 3, "caption": EVIL}
    (folder / "config.json").write_text(
        json.dumps({"kind": "subject", "name": "rex", "inputs": "/p", "config": config})
    )
    rows = [("embedding", 1, 0.9), ("embedding", 2, 0.7), ("identity", 1, 0.6), ("identity", 2, 0.5)]
    (folder / "loss.csv").write_text("stage,step,loss\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    for i, label in enumerate(("embedding-step2", "identity-step2")):
        (folder / "previews" / f"{label}.png").write_bytes(png((40 * i, 90, 200)))
        os.utime(folder / "previews" / f"{label}.png", (1000 + i, 1000 + i))
    (folder / "checkpoints" / "state-identity-2.safetensors").write_bytes(safetensors())
    (folder / "checkpoints" / "state.json").write_text(
        json.dumps({"stage": "identity", "step": 2, "tensors": "state-identity-2.safetensors"})
    )
    return folder


def make_registry(home: Path, run_id: str) -> Registry:
    registry = Registry(home)
    backbone = {"backbone": "tiny", "model_id": "dv/tiny", "revision": "0"}
    shared = [NewFile("preview", "preview.png", png((200, 30, 30)), PNG)]
    subject = NewEntry(
        [NewFile("adapter", "adapter.safetensors", safetensors(), SAFETENSORS), *shared,
         NewFile("reference_image", "00-a.png", png((10, 200, 10)), PNG)],
        {"backbone": backbone, "token": "<rex>", "init_word": "dog", "training": {"run": run_id},
         "description": EVIL},
    )  # fmt: skip
    checkpoint = NewEntry(subject.files, {**subject.fields, "training": {"run": run_id, "checkpoint_step": 2}})
    registry.add_version("subject", "rex", subject, checkpoints={"step2": checkpoint})
    motion = NewEntry(
        [NewFile("adapter", "adapter.safetensors", safetensors(), SAFETENSORS), *shared],
        {"backbone": backbone, "phrase": "sliding <b>right</b>"},
    )
    registry.add_version("motion", "slide", motion)
    return registry


# --- unit tests ----------------------------------------------------------------------------------


def test_escaping_and_links(tmp_path: Path) -> None:
    assert esc("<a href='x'>&\"") == "&lt;a href=&#x27;x&#x27;&gt;&amp;&quot;"
    (tmp_path / "a b").mkdir()
    assert link(tmp_path / "a b" / "c#1.mp4", tmp_path) == "a%20b/c%231.mp4"
    assert link(tmp_path / "x.png", tmp_path / "a b") == "../x.png"


def test_compose_command_makes_the_cell_alone() -> None:
    cell = {"subject": "rex:step2", "motion": "slide:v1", "subject_scale": 0.5, "motion_scale": 1.0, "seed": 7,
            "video": "c.mp4"}  # fmt: skip
    settings = {"seed": 1, "steps": 2, "guidance": 7.5, "device": "cpu", "fp8": True, "appearance_strength": 1.0}
    assert compose_command(cell, "it's <b>", settings) == (
        "dv compose rex:step2 slide:v1 'it'\"'\"'s <b>' --subject-scale 0.5 --motion-scale 1 --seed 7 "
        "--sample-steps 2 --guidance 7.5 --device cpu --fp8 -o c.mp4"
    )


def test_sweep_page_structure_and_escaping(tmp_path: Path) -> None:
    index = make_sweep(tmp_path / "sweep", frames=4)
    text = write_sweep_page(tmp_path / "sweep").read_text()
    page = Page(text)
    videos = page.all("video")
    assert [v["src"] for v in videos] == [c["video"] for c in index["cells"]]
    assert all({"muted", "loop", "playsinline", "data-sync"} <= set(v) for v in videos)
    assert "<script>document" not in text and "&lt;script&gt;document" in text
    headers = " ".join(page.text)
    for label in ("rex:step2", "subject scale 0.5", "subject scale 1", "slide:v1", "motion scale 0.5"):
        assert label in headers
    best = [attrs for tag, attrs in page.elements if attrs.get("class") == "best"]
    assert [b["id"] for b in best] == [index["best"]]
    assert "best by clip_t" in headers and "clip_t 0.25" in headers
    assert sum("dv compose rex:step2 slide:v1" in t for t in page.text) == 4


def test_sweep_page_keeps_links_inside_its_folder(tmp_path: Path) -> None:
    make_sweep(tmp_path / "s", frames=4)
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    index["cells"][0]["video"] = "../../etc/passwd"
    (tmp_path / "s" / "index.json").write_text(json.dumps(index))
    srcs = [v["src"] for v in Page(write_sweep_page(tmp_path / "s").read_text()).all("video")]
    assert srcs[0] == "" and all(".." not in s for s in srcs)


def test_run_page(tmp_path: Path) -> None:
    folder = make_run(tmp_path)
    text = write_run_page(folder, running=True).read_text()
    page = Page(text)
    assert [m["content"] for m in page.all("meta") if m.get("http-equiv") == "refresh"] == ["10"]
    assert page.all("span")[0]["data-status"] == "running"
    assert len(page.all("polyline")) == 2  # one per stage
    assert [i["src"] for i in page.all("img") if "alt" in i and i["alt"] != "preview"] == [
        "previews/embedding-step2.png", "previews/identity-step2.png"
    ]  # fmt: skip
    assert "dv subject learn --resume 20250101-000000-subject-rex-abcd" in text
    assert "<script>document" not in text
    stopped = Page(write_run_page(folder, stored=["rex:v1"]).read_text())
    assert not any(m.get("http-equiv") for m in stopped.all("meta"))
    assert stopped.all("span")[0]["data-status"] == "interrupted" and "rex:v1" in " ".join(stopped.text)


def test_loss_svg_empty_and_flat() -> None:
    assert "no loss" in loss_svg([])
    assert loss_svg([("motion", 1, 0.5), ("motion", 2, 0.5)]).count("<polyline") == 1


def test_gallery_lists_everything_with_blob_links(tmp_path: Path) -> None:
    from dreamvideo_cli.pages.gallery import write_gallery

    run = make_run(tmp_path / "home")
    registry = make_registry(tmp_path / "home", run.name)
    text = write_gallery(registry, tmp_path / "site").read_text()
    page = Page(text)
    words = " ".join(page.text)
    assert "<rex>" in words and "sliding <b>right</b>" in words and "<b>right" not in text
    assert "step2" in words and "v1" in words and "latest" in words  # versions and checkpoint tags
    srcs = [i["src"] for i in page.all("img")]
    assert srcs and all(s.startswith("../home/blobs/") for s in srcs)
    assert all((tmp_path / "site" / s).is_file() for s in srcs)
    assert [a["href"] for a in page.all("a")] == [f"../home/runs/{run.name}/index.html"]
    assert (run / "index.html").is_file() and "rex:v1" in (run / "index.html").read_text()


def test_dv_gallery_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer
    from typer.testing import CliRunner

    from dreamvideo_cli.cli import gallery

    monkeypatch.setenv("DV_HOME", str(tmp_path / "home"))
    make_registry(tmp_path / "home", "no-such-run")
    app = typer.Typer()
    gallery.install(app)
    app.command("noop")(lambda: None)  # two commands: Typer then takes the name as a subcommand
    result = CliRunner().invoke(app, ["gallery", "-o", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "site" / "index.html").is_file() and "wrote" in result.output


# --- in a real browser ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no `chromium` on PATH (Debian: apt-get install -y chromium); page not checked in a browser",
)


def browse(page: Path) -> dict[str, Any]:
    """Load `page` in headless Chromium for 5 s of virtual time; what the page's observer wrote."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
         "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    root = Page(done.stdout).all("html")[0]
    assert "data-dv-videos" in root, done.stdout[:2000]
    return {
        "videos": json.loads(root["data-dv-videos"]),
        "broken": json.loads(root["data-dv-broken-images"]),
        "images": int(root["data-dv-images-loaded"]),
        "errors": json.loads(root["data-dv-errors"]),
        "sync": json.loads(root.get("data-dv-sync", "{}")),
        "pwned": "data-pwned" in root,
        "dom": done.stdout,
    }


@needs_chromium
def test_sweep_videos_play_in_step_in_chromium(tmp_path: Path) -> None:
    make_sweep(tmp_path / "sweep")
    seen = browse(write_sweep_page(tmp_path / "sweep"))
    assert len(seen["videos"]) == 4 and not seen["errors"] and not seen["pwned"]
    for video in seen["videos"]:
        assert video["err"] == 0 and video["rs"] >= 2 and not video["paused"], video
        assert video["t"] > 0.5 and video["times"] > 3, video  # it played: its time moved on
    times = [v["t"] for v in seen["videos"]]
    assert max(times) - min(times) < 0.25 and seen["sync"]["started"], (times, seen["sync"])


@needs_chromium
def test_run_page_and_gallery_load_in_chromium(tmp_path: Path) -> None:
    run = make_run(tmp_path / "home")
    registry = make_registry(tmp_path / "home", run.name)
    from dreamvideo_cli.pages.gallery import write_gallery

    gallery = browse(write_gallery(registry, tmp_path / "site"))
    assert gallery["broken"] == [] and gallery["errors"] == [] and not gallery["pwned"]
    # rex: its preview and photo; slide: its preview. Every one loaded from its blob (no extension).
    assert gallery["dom"].count('class="thumb"') == 3 and gallery["images"] == 3
    page = browse(run / "index.html")
    assert page["broken"] == [] and page["errors"] == [] and 'id="loss"' in page["dom"]
    assert page["images"] == 3  # the big preview (the last one, shown by the strip's script) and two thumbnails
    big = next(attrs for tag, attrs in Page(page["dom"]).elements if attrs.get("id") == "preview")
    assert big["src"] == "previews/identity-step2.png"
