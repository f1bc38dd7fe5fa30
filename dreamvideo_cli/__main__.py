"""`python -m dreamvideo_cli ...` runs the dv CLI (e.g. under `accelerate launch -m`)."""

from dreamvideo_cli.cli import run

run()
