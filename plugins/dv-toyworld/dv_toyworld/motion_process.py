"""Learn a motion in a child process while this one learns the subject (`dv demo`).

Subject and motion learning are independent, and the toy model's ops are too small for
two threads to speed up one of them, so on a CPU with two or more cores the demo gives
each its own process (and half the cores). The child sends the engine's events back over
a pipe; the parent renders them between its own, so one renderer sees both runs (their
stage names differ: "embedding" and "identity" against "motion"). The child is a fresh
interpreter (`python -c`), not a fork (a fork after torch has started its thread pool can
hang) nor multiprocessing's spawn (which re-runs the caller's `__main__`).
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from dreamvideo_cli.events import Event, EventHandler

if TYPE_CHECKING:
    from dreamvideo_cli import MotionConfig

_DONE, _FAILED = "done", "failed"
_CHILD = "import sys; from dv_toyworld.motion_process import child_main; child_main(int(sys.argv[1]))"


def child_main(fd: int) -> None:
    """The child: read the job from stdin, learn the motion, send events and the outcome
    as pickles to `fd`."""
    clips, name, config, home, threads = pickle.load(sys.stdin.buffer)
    with os.fdopen(fd, "wb") as out:

        def send(item: Any) -> None:
            pickle.dump(item, out)
            out.flush()

        try:
            import torch

            from dreamvideo_cli import learn_motion
            from dv_registry import Registry

            torch.set_num_threads(threads)
            manifest = learn_motion(clips, name, config, registry=Registry(home), on_event=send)
            send((_DONE, f"{manifest.name}:{manifest.tag}"))
        except KeyboardInterrupt:
            pass  # the parent was interrupted too, and says so
        except BaseException as error:  # every failure goes back to the parent, which raises it
            try:
                pickle.dumps(error)
            except Exception:  # an error that cannot cross the pipe goes as its text
                error = RuntimeError(f"{type(error).__name__}: {error}")
            send((_FAILED, error))


class MotionProcess:
    """`learn_motion` in a child process. Use as a context manager: `forward(on_event)` is
    the handler to give the parent's own work, `result(on_event)` waits for the motion
    and returns its `name:tag`; leaving the block stops a child still running."""

    def __init__(self, clips: Path, name: str, config: MotionConfig, home: Path, threads: int) -> None:
        self._job = (str(clips), name, config, str(home), threads)
        self._items: queue.Queue[Any] = queue.Queue()
        self._outcome: tuple[str, Any] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MotionProcess:
        read, write = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(write)], stdin=subprocess.PIPE, pass_fds=(write,)
        )
        os.close(write)
        assert self._process.stdin is not None
        self._process.stdin.write(pickle.dumps(self._job))
        self._process.stdin.close()
        threading.Thread(target=self._read, args=(os.fdopen(read, "rb"),), daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._process is not None
        if self._process.poll() is None:
            self._process.terminate()
        self._process.wait()

    def _read(self, pipe: BinaryIO) -> None:
        """Move the child's pickles onto the queue; None marks the pipe's end."""
        with pipe:
            while True:
                try:
                    self._items.put(pickle.load(pipe))
                except (EOFError, pickle.UnpicklingError, OSError):
                    self._items.put(None)
                    return

    def forward(self, on_event: EventHandler) -> EventHandler:
        """`on_event`, passing on whatever the child has sent before each event of ours."""

        def handler(event: Event) -> None:
            self._drain(on_event, block=False)
            on_event(event)

        return handler

    def result(self, on_event: EventHandler) -> str:
        self._drain(on_event, block=True)
        if self._outcome is None:
            assert self._process is not None
            code = self._process.wait()
            raise RuntimeError(f"motion learning stopped without a result (exit code {code})")
        kind, value = self._outcome
        if kind == _FAILED:
            raise value
        return str(value)

    def _drain(self, on_event: EventHandler, block: bool) -> None:
        """Pass on the child's events; with `block`, until its outcome or the pipe's end."""
        while self._outcome is None:
            try:
                item = self._items.get() if block else self._items.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._items.put(None)  # stays the last item for later calls
                return
            if isinstance(item, tuple):
                self._outcome = item
            else:
                on_event(item)
