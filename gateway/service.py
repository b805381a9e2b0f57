"""The daemon as systemd sees it: READY, live STATUS lines, RELOADING, STOPPING, WATCHDOG.

READY=1 goes out once the daemon's own readiness holds (the store is writable,
HTTP and every listening connector accept); that never waits for a remote
mailbox or helpdesk, so an outage elsewhere cannot make systemd fail the start.
The STATUS line (`systemctl status` shows it) is refreshed every STATUS_INTERVAL
seconds when it changed. The watchdog task runs on the daemon's event loop, so a
blocked loop stops the pings. Off systemd every message is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from gateway.delivery.board import DeliveryBoard
from gateway.systemd_notify import Notifier, watchdog_interval

STATUS_INTERVAL = 2.0
UP = ("running", "degraded")

log = structlog.get_logger("gateway.systemd")

Readiness = Callable[[], tuple[bool, dict[str, Any]]]


class Service:
    def __init__(self, notifier: Notifier | None = None) -> None:
        self.notifier = notifier or Notifier.from_env()
        self._watchdog: asyncio.Task[None] | None = None
        self._status: asyncio.Task[None] | None = None
        self._readiness: Readiness | None = None
        self._board: DeliveryBoard | None = None
        self._ready_sent = False
        self._last = ""

    def start(self, readiness: Readiness, board: DeliveryBoard) -> None:
        """Begin the watchdog and status tasks; READY=1 as soon as readiness holds."""
        self._readiness, self._board = readiness, board
        if not self.notifier.enabled:
            return
        interval = watchdog_interval()
        if interval:
            log.info("systemd.watchdog", interval=interval, ping_every=interval / 2)
            self._watchdog = asyncio.create_task(self.notifier.keep_alive(interval))
        self._status = asyncio.create_task(self._report(), name="systemd-status")

    async def status_line(self) -> tuple[bool, str]:
        """Whether the daemon is ready, and its one-line summary for systemd."""
        if self._readiness is None or self._board is None:
            return False, ""
        ready, body = self._readiness()
        components = body["components"].values()
        up = sum(1 for c in components if c["state"] in UP)
        lag = 0
        for name in self._board.names():
            with contextlib.suppress(Exception):  # a backend removed by a reload meanwhile
                lag += (await self._board.view(name)).lag_events
        line = (
            f"{body['status']}: {up}/{len(components)} components up, "
            f"{body['store']['head_offset']} events ingested, backend lag {lag} events"
        )
        return ready, line

    async def _report(self) -> None:
        while True:
            try:
                ready, line = await self.status_line()
            except Exception as err:  # noqa: BLE001 - a status line must not end the loop
                log.warning("systemd.status_failed", error=f"{type(err).__name__}: {err}")
                ready, line = False, ""
            if ready and not self._ready_sent:
                self._ready_sent = self.notifier.ready(line)
                self._last = line
                log.info("systemd.ready_sent", status=line)
            elif line and line != self._last and self._ready_sent:
                self.notifier.status(line)
                self._last = line
            await asyncio.sleep(STATUS_INTERVAL if self._ready_sent else 0.1)

    def reloading(self) -> None:
        self.notifier.reloading()

    async def reloaded(self) -> None:
        """READY=1 after a reload, applied or refused: the service runs either way."""
        if not self.notifier.enabled or self._readiness is None:
            return
        try:
            _, line = await self.status_line()
        except Exception:  # noqa: BLE001 - READY matters more than its status line
            line = ""
        self.notifier.ready(line)
        self._last = line

    def stopping(self) -> None:
        """STOPPING=1 and no more status lines; the watchdog pings on through the drain."""
        self.notifier.stopping()
        if self._status is not None:
            self._status.cancel()

    async def close(self) -> None:
        tasks = [task for task in (self._status, self._watchdog) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._status = self._watchdog = None
        self.notifier.close()
