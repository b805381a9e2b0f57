"""systemd's notify protocol, spoken directly: one datagram per message to $NOTIFY_SOCKET.

The protocol is small enough to own (a line-per-field datagram to a unix socket,
abstract when the address starts with "@"), so there is no dependency for it.
Without $NOTIFY_SOCKET every call is a no-op, so the daemon calls it the same way
in a terminal and under systemd. A send never raises into the daemon: a failure is
logged once as a warning, because a broken notify socket must not stop the service
(systemd will notice the missing READY or WATCHDOG on its own).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("gateway.systemd")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float:
    """The watchdog period systemd enforces (WatchdogSec=), in seconds; 0 when there is none.

    $WATCHDOG_PID, when set, names the process systemd watches: another pid (a child
    that inherited the environment) must not ping on the main process's behalf.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return 0.0
    if owner and owner != str(os.getpid() if pid is None else pid):
        return 0.0
    return int(usec) / 1_000_000


class Notifier:
    """Sends READY, STATUS, RELOADING, STOPPING and WATCHDOG messages; silent off systemd."""

    def __init__(self, address: str = "") -> None:
        if address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        self.address = address
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET", ""))

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """One datagram of "KEY=value" lines; whether it left. Never raises."""
        if not self.address:
            return False
        payload = "\n".join(fields).encode("utf-8", errors="replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop on a full receive queue: drop and warn instead.
                self._sock.setblocking(False)
            self._sock.sendto(payload, self.address)
        except OSError as err:
            if not self._warned:
                self._warned = True
                log.warning(
                    "systemd.notify_failed",
                    socket=self.address.replace("\0", "@"),
                    error=f"{type(err).__name__}: {err}",
                    hint="systemd may not see readiness or watchdog pings; warned once",
                )
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def reloading(self) -> bool:
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    async def keep_alive(self, interval: float) -> None:
        """Ping every half `interval` from the event loop itself: if the loop blocks, the
        pings stop and systemd restarts the service, which is the point of the watchdog."""
        while True:
            self.watchdog()
            await asyncio.sleep(interval / 2)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
