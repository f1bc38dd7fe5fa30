"""The pieces every page shares: escaping, links, the stylesheet, the scripts, the page frame.

No template engine: pages are small, and f-strings over `esc()` keep every place user text
enters the page visible in review. Scripts are inline string constants so a page is one
file plus the media it links to, and works from file:// (no module loads, no fetch).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

from dv_registry.fsutil import atomic_write_bytes  # the one atomic write: a reader never sees half a page


def esc(value: object) -> str:
    """`value` as text safe inside an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


def link(target: Path, base: Path) -> str:
    """A URL for `target` seen from a page in folder `base`: relative when a relative path
    exists (the page keeps working when the folders move together), else a file:// URI."""
    try:
        rel = os.path.relpath(target.resolve(), base.resolve())
    except ValueError:  # another drive (Windows): no relative path exists
        return target.resolve().as_uri()
    return quote(Path(rel).as_posix())


def inside(target: Path, folder: Path) -> bool:
    """Whether `target` lies in `folder`: sweep and run pages link only to their own files."""
    return target.resolve().is_relative_to(folder.resolve())


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
code,pre{font:12px ui-monospace,monospace;background:#eee;padding:.1em .3em;border-radius:3px}
pre{padding:.5em;overflow:auto;white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse}th,td{padding:4px 6px;vertical-align:top;text-align:left}
th{font-weight:600}.grid td{border:1px solid #ddd;background:#fff}
video,img.thumb{display:block;max-width:256px;background:#000}
.best{outline:3px solid #d00;outline-offset:-3px}.muted{color:#777}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:.8em 0}
.strip{display:flex;gap:4px;overflow-x:auto}.strip img{height:48px;cursor:pointer;opacity:.6}
.strip img.on{opacity:1;outline:2px solid #06c}.status{font-weight:600}
.controls{margin:.5em 0}.controls input[type=range]{width:320px;vertical-align:middle}
""".strip()

# Reports what the browser sees into the DOM (the tests read it from --dump-dom, a user can
# ignore it): each video's readyState, currentTime and error, images loaded and failed, and
# script errors; `times` counts the distinct currentTimes seen (above 1: it played). Every 200 ms.
OBSERVER = """
(function(){
var errs=[],seen=[];window.addEventListener('error',function(e){errs.push(String(e.message||e.type));},true);
function look(){
 var v=[].map.call(document.querySelectorAll('video'),function(x,i){var s=seen[i]=seen[i]||{};s[x.currentTime]=1;
  return {src:x.getAttribute('src'),rs:x.readyState,t:x.currentTime,err:x.error?x.error.code:0,paused:x.paused,
  times:Object.keys(s).length};});
 var bad=[].filter.call(document.images,function(i){return i.complete&&i.naturalWidth===0;})
  .map(function(i){return i.getAttribute('src');});
 var ok=[].filter.call(document.images,function(i){return i.complete&&i.naturalWidth>0;}).length;
 var r=document.documentElement;r.setAttribute('data-dv-videos',JSON.stringify(v));r.setAttribute('data-dv-images-loaded',ok);
 r.setAttribute('data-dv-broken-images',JSON.stringify(bad));r.setAttribute('data-dv-errors',JSON.stringify(errs));
}
setInterval(look,200);window.addEventListener('load',look);
})();
""".strip()


def page(
    title: str, body: str, *, refresh_s: int | None = None, script: str = "", data: dict[str, str] | None = None
) -> str:
    """A whole document; `body` is already escaped HTML. `refresh_s`: reload every so many
    seconds (a run page while its run is training); `data`: data-* attributes of <body>
    that the page's script reads."""
    attrs = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in (data or {}).items())
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{refresh}'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
        f"<body{attrs}>\n{body}\n<script>{OBSERVER}</script>\n"
        + (f"<script>{script}</script>\n" if script else "")
        + "</body></html>\n"
    )


def write_page(path: Path, text: str) -> Path:
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
