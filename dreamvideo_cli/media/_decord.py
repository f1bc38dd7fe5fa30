"""decord as a library to live with: imported lazily and without the CUDA stack, its C++
logger kept off the terminal, the memory its decoder thread frees given back, and its error
messages made readable. `decoders.DecordReader` is the one user."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import IO, Any


class DecordUnavailable(Exception):
    """decord is not installed, or cannot open this file."""


_decord_module: ModuleType | None = None
_ABSENT = object()


def load() -> ModuleType:
    """Import decord once (lazily: it costs ~0.4 s, and `dv --help` must stay instant)."""
    global _decord_module
    if _decord_module is None:
        # decord2's import dlopens every library under site-packages/nvidia/ for its CUDA
        # builds: with torch installed that is the whole CUDA stack, +370 MB resident for
        # nothing, since dv decodes on the CPU and this wheel's libdecord links no CUDA.
        # While sys.modules says "nvidia" is None, find_spec("nvidia") finds nothing.
        hidden = sys.modules.get("nvidia", _ABSENT)
        sys.modules["nvidia"] = None  # type: ignore[assignment]
        try:
            import decord
        except ImportError as exc:  # a platform without a decord2 wheel
            raise DecordUnavailable(f"decord is not installed ({exc})") from None
        finally:
            if hidden is _ABSENT:
                del sys.modules["nvidia"]
            else:
                sys.modules["nvidia"] = hidden  # type: ignore[assignment]
        # FFmpeg's own log lines (decord bundles its own copy of FFmpeg) stay off stderr.
        decord.logging.set_level(decord.logging.QUIET)
        _decord_module = decord
    return _decord_module


def give_back_freed_memory() -> None:
    """Return the pages of decord's dropped read-ahead frames to the system: they were
    allocated by its decoder thread, whose malloc arena glibc would otherwise keep, so a
    few hundred MB of freed frames would stay resident for the rest of the run."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


class Sink:
    """What was written to stderr while `stderr_captured` held it."""

    def __init__(self, handle: IO[bytes] | None) -> None:
        self.handle = handle

    def text(self) -> str:
        if self.handle is None:
            return ""
        self.handle.flush()
        self.handle.seek(0)
        return self.handle.read().decode("utf-8", errors="replace")


@contextlib.contextmanager
def stderr_captured() -> Iterator[Sink]:
    """decord's C++ logger writes straight to file descriptor 2 when it cannot open a file;
    send that to a temp file instead, so the user sees one error line, not decord's."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to protect
            yield Sink(None)
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield Sink(sink)
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def reason(exc: BaseException, said: str = "") -> str:
    """decord's message, without its `[12:00:00] /project/src/...cc:85: ` prefix; when the
    exception only says "Error reading <file>...", the line decord logged says why."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    logged = [line for line in said.splitlines() if line.strip()]
    if text.startswith("Error reading") and logged:
        text = logged[-1]
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text).strip() or type(exc).__name__
