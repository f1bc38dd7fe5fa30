"""A learning run folder's `index.html`: where the run stands, its loss curve, its previews
over steps, its settings, what it stored in the registry and how to resume it.

The trainer rewrites it as the run goes (`running=True`: the page reloads itself so a user
can keep it open) and once more at the end or on Ctrl-C (`running=False`). Status comes
from `runs.py`'s reading of the folder, so the page and `dv runs list` agree.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreamvideo_cli.pages.html import esc, link, page, write_page
from dreamvideo_cli.runs import _inspect  # one reading of a run folder for dv runs and this page

REFRESH_S = 10
MAX_POINTS = 800  # per stage: enough for a smooth curve, small enough for a quick page
_COLOURS = ("#06c", "#d60", "#393", "#939")

# The previews strip: a slider and thumbnails choose which preview the big image shows.
# The stale warning: a running page that has not been rewritten for a while (the trainer
# was killed without a chance to say so) says so, since a static page cannot ask.
STRIP = """
(function(){
var imgs=[].slice.call(document.querySelectorAll('.strip img')),big=document.getElementById('preview'),
 bar=document.getElementById('pick'),cap=document.getElementById('caption');
function show(i){if(!imgs.length)return;imgs.forEach(function(m,j){m.className=j===i?'on':'';});
 big.src=imgs[i].getAttribute('src');cap.textContent=imgs[i].getAttribute('alt');bar.value=i;}
if(bar){bar.addEventListener('input',function(){show(parseInt(bar.value,10));});}
imgs.forEach(function(m,i){m.addEventListener('click',function(){show(i);});});
show(imgs.length-1);
var w=document.body.getAttribute('data-written'),s=document.getElementById('stale');
if(w&&s&&document.body.getAttribute('data-running')==='1'){var age=Date.now()/1000-parseFloat(w);
 if(age>120)s.textContent=' (no update for '+Math.round(age/60)+' min: the run may have stopped)';}
})();
""".strip()


def read_losses(folder: Path) -> list[tuple[str, int, float]]:
    """loss.csv's rows (stage, step, loss); rows a crash left half-written are skipped."""
    rows: list[tuple[str, int, float]] = []
    try:
        with open(folder / "loss.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    rows.append((row["stage"], int(row["step"]), float(row["loss"])))
                except (KeyError, TypeError, ValueError):
                    continue
    except OSError:
        return []
    return rows


def loss_svg(rows: list[tuple[str, int, float]], width: int = 640, height: int = 220) -> str:
    """The loss curve as inline SVG: one polyline per stage, stages one after the other."""
    if not rows:
        return "<p class=muted>no loss logged yet</p>"
    stages = list(dict.fromkeys(stage for stage, _, _ in rows))
    losses = [loss for _, _, loss in rows]
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    pad, n = 36, len(rows)
    lines, x0 = [], 0
    for k, stage in enumerate(stages):
        points = [(i, loss) for i, (s, _, loss) in enumerate(rows) if s == stage]
        stride = max(1, len(points) // MAX_POINTS)
        coords = " ".join(
            f"{pad + (width - pad - 4) * i / max(1, n - 1):.1f},{4 + (height - pad) * (high - loss) / span:.1f}"
            for i, loss in points[::stride]
        )
        colour = _COLOURS[k % len(_COLOURS)]
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        lines.append(f'<text x="{pad + 4 + x0}" y="{height - 6}" fill="{colour}" font-size="11">{esc(stage)}</text>')
        x0 += 90
    axes = (
        f'<line x1="{pad}" y1="4" x2="{pad}" y2="{height - pad + 4}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{height - pad + 4}" x2="{width}" y2="{height - pad + 4}" stroke="#999"/>'
        f'<text x="2" y="12" font-size="10">{high:.3g}</text>'
        f'<text x="2" y="{height - pad + 4}" font-size="10">{low:.3g}</text>'
    )
    return (
        f'<svg id="loss" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="loss over steps">{axes}{"".join(lines)}</svg>'
    )


def _previews(folder: Path) -> list[Path]:
    """previews/*.png in the order they were written (stage labels do not sort by name)."""
    found = [p for p in (folder / "previews").glob("*.png") if not p.name.startswith(".")]

    def order(path: Path) -> tuple[float, int, str]:
        digits = re.findall(r"\d+", path.stem)
        return (path.stat().st_mtime, int(digits[-1]) if digits else 0, path.name)

    return sorted(found, key=order)


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_page(run_folder: Path, *, running: bool = False, stored: Sequence[str] = ()) -> str:
    """The page's HTML for `run_folder`. `stored`: registry refs the run produced (the
    trainer knows its manifest; `dv gallery` finds them from the manifests)."""
    info = _inspect(run_folder, {run_folder.name: list(stored)} if stored else {})
    saved = _read_config(run_folder)
    kind = info.kind or "subject"
    status = "running" if running else ("finished" if info.finished else "interrupted")
    step = f"{info.stage or '-'} step {info.step if info.step is not None else '-'}"
    step += f" of {info.total}" if info.total is not None else ""
    previews = _previews(run_folder)
    strip = "<p class=muted>no previews yet (learn with --preview-every N)</p>"
    if previews:
        thumbs = "".join(f'<img src="{esc(link(p, run_folder))}" alt="{esc(p.stem)}">' for p in previews)
        strip = (
            f'<img id="preview" class="big" alt="preview" style="max-width:100%">'
            f'<div class=controls><input id="pick" type="range" min="0" max="{len(previews) - 1}" step="1" '
            f'value="{len(previews) - 1}" aria-label="preview"> <span id="caption"></span></div>'
            f'<div class="strip">{thumbs}</div>'
        )
    refs = info.stored
    entry = (
        "".join(f"<li><code>{esc(ref)}</code></li>" for ref in refs)
        if refs
        else "<li class=muted>none yet: a run stores its result when it finishes</li>"
    )
    resume = f"dv {kind} learn --resume {info.id}"
    config_rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(json.dumps(v, default=str))}</td></tr>"
        for k, v in dict(saved.get("config") or {}).items()
    )
    loss_png = ' · <a href="loss.png">loss.png</a>' if (run_folder / "loss.png").is_file() else ""
    body = (
        f"<h1>{esc(kind)} run: {esc(info.name or info.id)}</h1>"
        f'<p><span class="status" id="status" data-status="{status}">{status}</span>, {esc(step)}'
        f'<span id="stale"></span> <span class=muted>({esc(info.id)})</span></p>'
        f'<h2>Loss</h2>{loss_svg(read_losses(run_folder))}<p><a href="loss.csv">loss.csv</a>{loss_png}</p>'
        f"<h2>Previews</h2>{strip}"
        f"<h2>Registry</h2><ul>{entry}</ul>"
        + (
            f"<h2>Resume</h2><p>Continue it with <code>{esc(resume)}</code></p>"
            if status != "finished"  # a finished run has nothing left to resume (dv refuses it)
            else ""
        )
        + f"<h2>Settings</h2><p class=muted>inputs: {esc(saved.get('inputs', '-'))}</p>"
        f"<table>{config_rows}</table>"
    )
    data = {"running": "1" if running else "0", "written": f"{time.time():.0f}"}
    return page(f"dv run {info.name or info.id}: {status}", body, refresh_s=REFRESH_S if running else None,
                script=STRIP, data=data)  # fmt: skip


def write_run_page(run_folder: Path, *, running: bool = False, stored: Sequence[str] = ()) -> Path:
    """Write `run_folder/index.html`; returns its path."""
    return write_page(run_folder / "index.html", run_page(run_folder, running=running, stored=stored))
