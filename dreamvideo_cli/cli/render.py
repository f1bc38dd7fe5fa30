"""What a plugin's own commands (the `register_commands` hook) use to talk like `dv`:
data on stdout, engine events rendered as progress on stderr."""

from dreamvideo_cli.cli._output import out as stdout
from dreamvideo_cli.cli._output import print_json
from dreamvideo_cli.cli._progress import ProgressRenderer

__all__ = ["ProgressRenderer", "print_json", "stdout"]
