"""Static pages of dv's results: a sweep's grid of videos, a learning run, the registry.

Each page is one `index.html` of plain HTML, one small stylesheet and script (in `html.py`),
and links to the files it shows: no server, no framework, no CDN, so it works from file://
offline. Everything a user wrote (names, prompts, captions) is escaped.

The API: `sweep_page.write_sweep_page`, `run_page.write_run_page`, `gallery.write_gallery`.
Nothing is imported here, so that writing one kind of page loads nothing the others need.
"""
