"""A sweep folder's `index.html`: its cells as videos playing in step, under the labels of
their settings, with their scores and the one `dv compose` command that makes each alone.

It reads only what `sweep.run_sweep` writes to `index.json` (cells with their subject,
motion, scales, video file, seed and scores; the prompt; the ComposeConfig as `settings`),
so it can be written again for any sweep folder, old ones included.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from dreamvideo_cli.errors import DVError
from dreamvideo_cli.pages.html import esc, inside, link, page, write_page

# One clock for all: the first video leads, the others follow it. A browser decodes each
# video on its own timer, so they drift apart by a few frames within seconds; anything more
# than DRIFT seconds away is put back. The scrubber moves every video to the same time.
SYNC = """
(function(){
var vs=[].slice.call(document.querySelectorAll('video[data-sync]'));if(!vs.length)return;
var lead=vs[0],btn=document.getElementById('playpause'),bar=document.getElementById('scrub'),
 out=document.getElementById('frame'),fps=parseFloat(document.body.getAttribute('data-fps'))||8,DRIFT=0.5/fps,
 fixes=0,maxd=0;
function all(f){vs.forEach(f);}
function setAll(t){all(function(v){v.currentTime=t;});}
function play(){all(function(v){var p=v.play();if(p&&p.catch)p.catch(function(){});});btn.textContent='pause';}
function pause(){all(function(v){v.pause();});btn.textContent='play';}
btn.addEventListener('click',function(){lead.paused?play():pause();});
bar.addEventListener('input',function(){pause();setAll(parseFloat(bar.value)/fps);});
function ready(){return vs.every(function(v){return v.readyState>=2;});}
var started=false;
function start(){if(started||!ready())return;started=true;setAll(0);play();}
all(function(v){v.addEventListener('loadeddata',start);v.addEventListener('canplay',start);});
start();
function tick(){
 var d=lead.duration;if(d&&isFinite(d))bar.max=Math.max(0,Math.round(d*fps)-1);
 var t=lead.currentTime,m=0;
 vs.slice(1).forEach(function(v){var e=Math.abs(v.currentTime-t);if(d&&isFinite(d))e=Math.min(e,d-e);
  if(e>m)m=e;if(e>DRIFT&&!lead.paused){v.currentTime=t;fixes++;}if(v.paused!==lead.paused)lead.paused?v.pause():v.play();});
 maxd=m;if(!lead.paused)bar.value=Math.round(t*fps);out.textContent=String(Math.round(t*fps));
 document.documentElement.setAttribute('data-dv-sync',JSON.stringify({drift:m,fixes:fixes,started:started}));
}
setInterval(tick,100);
})();
""".strip()

# ComposeConfig fields and the `dv compose` option that sets each (eta has no option).
_OPTIONS = {
    "steps": "--sample-steps",
    "guidance": "--guidance",
    "frames": "--frames",
    "fps": "--fps",
    "sampler": "--sampler",
    "negative_prompt": "--negative-prompt",
    "appearance_image": "--appearance-image",
    "backbone_path": "--backbone-path",
}
_DEFAULTS: dict[str, Any] = {"appearance_strength": 1.0, "device": "auto", "blocks_to_swap": 0}


def compose_command(cell: dict[str, Any], prompt: str, settings: dict[str, Any]) -> str:
    """The `dv compose` line that makes this cell alone (same seed, scales and settings)."""
    args = ["dv", "compose", str(cell["subject"]), str(cell["motion"]), prompt]
    args += [
        "--subject-scale",
        f"{float(cell['subject_scale']):g}",
        "--motion-scale",
        f"{float(cell['motion_scale']):g}",
    ]
    seed = cell.get("seed", settings.get("seed"))
    if seed is not None:
        args += ["--seed", str(seed)]
    for field, option in _OPTIONS.items():
        value = settings.get(field)
        if value not in (None, ""):
            args += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    for field, default in _DEFAULTS.items():
        value = settings.get(field, default)
        if value is not None and value != default:
            flag = "--" + field.replace("_", "-")
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if settings.get("expert_guidance"):
        pairs = ",".join(f"{name}={float(scale):g}" for name, scale in settings["expert_guidance"])
        args += ["--expert-guidance", pairs]
    for flag in ("gif", "fp8"):
        if settings.get(flag):
            args.append(f"--{flag}")
    if cell.get("video"):
        args += ["-o", str(cell["video"])]
    return shlex.join(args)


def _row_label(cell: dict[str, Any]) -> tuple[str, str]:
    if cell["subject"] == "-":
        return ("no subject", "")
    return (str(cell["subject"]), f"subject scale {float(cell['subject_scale']):g}")


def _column_label(cell: dict[str, Any]) -> tuple[str, str]:
    if cell["motion"] == "-":
        return ("no motion", "")
    return (str(cell["motion"]), f"motion scale {float(cell['motion_scale']):g}")


def _label(parts: tuple[str, str]) -> str:
    checkpoint, scale = parts
    return f"<b>{esc(checkpoint)}</b>" + (f"<br><span class=muted>{esc(scale)}</span>" if scale else "")


def _scores(scores: dict[str, Any], best_metric: str | None, is_best: bool) -> str:
    shown = [
        f"{esc(name)} {value:.4g}" if isinstance(value, int | float) else f"{esc(name)} -"
        for name, value in scores.items()
    ]
    if not shown:
        return ""
    mark = f" <b>best by {esc(best_metric)}</b>" if is_best and best_metric else ""
    return f'<div class="scores">{", ".join(shown)}{mark}</div>'


def sweep_page(folder: Path, index: dict[str, Any]) -> str:
    """The page's HTML for a sweep folder whose index.json holds `index`."""
    cells: list[dict[str, Any]] = list(index.get("cells", []))
    prompt = str(index.get("prompt", ""))
    settings: dict[str, Any] = dict(index.get("settings") or {})
    best = index.get("best")
    rows = list(dict.fromkeys(_row_label(c) for c in cells))
    columns = list(dict.fromkeys(_column_label(c) for c in cells))
    by_place = {(_row_label(c), _column_label(c)): c for c in cells}
    first_metric = next((name for c in cells for name in c.get("scores", {})), None)
    head = "<tr><th></th>" + "".join(f"<th>{_label(col)}</th>" for col in columns) + "</tr>"
    body_rows = []
    for row in rows:
        tds = []
        for col in columns:
            cell = by_place.get((row, col))
            if cell is None:
                tds.append("<td></td>")
                continue
            video = folder / str(cell["video"])
            is_best = best is not None and cell.get("id") == best
            # A cell's file is named by index.json; keep the page's links inside its folder.
            src = link(video, folder) if inside(video, folder) else ""
            tds.append(
                f'<td id="{esc(cell.get("id", ""))}"{" class=best" if is_best else ""}>'
                f'<video data-sync src="{esc(src)}" muted loop playsinline preload="auto"></video>'
                f"{_scores(dict(cell.get('scores') or {}), first_metric, is_best)}"
                f"<div class=muted>prompt: {esc(cell.get('prompt', prompt))}</div>"
                f"<code>{esc(compose_command(cell, prompt, settings))}</code></td>"
            )
        body_rows.append(f"<tr><th>{_label(row)}</th>{''.join(tds)}</tr>")
    fps = settings.get("fps") or 8
    controls = (
        '<div class="controls"><button id="playpause" type="button">play</button> '
        '<input id="scrub" type="range" min="0" max="0" step="1" value="0" aria-label="frame"> '
        'frame <output id="frame">0</output></div>'
    )
    body = (
        f"<h1>Sweep: {esc(prompt) or '(no prompt)'}</h1>"
        f"<p class=muted>rows: subject checkpoint and scale; columns: motion checkpoint and scale; seed "
        f"{esc(settings.get('seed', '-'))}. All videos play together; the best cell (if scored) is framed.</p>"
        f"{controls}<table class=grid>{head}{''.join(body_rows)}</table>"
        '<p><a href="grid.png">grid.png</a> · <a href="index.json">index.json</a></p>'
    )
    return page(f"dv sweep: {prompt}", body, script=SYNC, data={"fps": str(fps)})


def write_sweep_page(folder: Path) -> Path:
    """Write `folder/index.html` from `folder/index.json`; returns its path."""
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DVError(f"{folder} is not a sweep folder: {exc}", "a sweep writes index.json beside its videos") from None
    if not isinstance(index, dict):
        raise DVError(f"{folder / 'index.json'} is not a sweep index", "a sweep writes index.json beside its videos")
    return write_page(folder / "index.html", sweep_page(folder, index))
