"""The cross-process registry lock: writers hold it exclusively, readers shared.

It is an OS lock on `$DV_HOME/lock` (flock on POSIX), so it is released by the kernel when
its holder dies, even by SIGKILL: a crashed writer never leaves the registry locked.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from dv_registry.errors import LockTimeoutError

Mode = Literal["shared", "exclusive"]


class RegistryLock:
    """Reentrant within one Registry object; one holder per process thread at a time."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._fd: int | None = None
        self._mode: Mode | None = None
        self._depth = 0

    @property
    def depth(self) -> int:
        return self._depth

    def acquire(self, mode: Mode) -> None:
        self._thread_lock.acquire()
        if self._depth:
            if mode == "exclusive" and self._mode != "exclusive":
                self._thread_lock.release()
                raise RuntimeError("dv_registry: cannot take the write lock inside a read")
            self._depth += 1
            return
        try:
            self._fd = self._open()
            if self._fd is not None:
                self._lock_os(self._fd, mode)
        except BaseException:
            self._close()
            self._thread_lock.release()
            raise
        self._mode = mode
        self._depth = 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._close()
            self._mode = None
        self._thread_lock.release()

    def _open(self) -> int | None:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            # A read-only registry (a shared, mounted copy) can still be read, without a lock.
            return None
        except OSError as exc:
            if exc.errno == 30:  # EROFS
                return None
            raise

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the OS lock

    def _lock_os(self, fd: int, mode: Mode) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while not _try_lock(fd, mode):
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"the registry at {self.path.parent} is busy{self._holder()}",
                    hint="another dv process is writing to it; try again when it has finished",
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.002)
        if mode == "exclusive" and sys.platform != "win32":
            # Only for the message a waiting process prints; nothing trusts it.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f" (held by process {pid})" if pid.isdigit() else ""


if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int, mode: Mode) -> bool:
        # Windows byte-range locks have no shared mode here; readers simply take turns.
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int, mode: Mode) -> bool:
        operation = fcntl.LOCK_EX if mode == "exclusive" else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
