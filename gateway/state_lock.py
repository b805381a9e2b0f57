"""One daemon per store: an advisory lock held for the daemon's life.

Two daemons on one store would both think they own the stream (two delivery
engines sending every event twice, two timers emitting each breach); and a
restore must not swap the store under a daemon that is just starting. Both
take this lock, so whichever comes second is told who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StateDirBusy(RuntimeError):
    """Another process holds the store."""


class StateLock:
    """`<store>.lock` beside the store file (helpline.db.lock), whatever directory it is in."""

    def __init__(self, store: Path) -> None:
        self.path = store.with_name(store.name + ".lock")
        self._fd: int | None = None

    def acquire(self, what: str = "a helpline daemon") -> None:
        """Take the lock or raise StateDirBusy naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusy(
                f"the store {self.path.with_suffix('')} is in use by another process "
                f"(pid {holder}): one store serves one daemon; stop it before {what}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
