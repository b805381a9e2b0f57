"""A component for the tests, loaded as `type = "tests.plugins:Probe"` like any site plugin.

It records each lifecycle step in a marker file, so a test in another process
can see what the daemon's supervisor did to it (started, stopped, restarted).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal

from aiohttp import web

from gateway.component import (
    ComponentContext,
    ComponentState,
    Health,
    PermanentStartError,
    StartError,
)
from gateway.config_types import Section


class ProbeConfig(Section):
    marker: str
    crash_after: float | None = None
    fail_start: Literal["no", "temporary", "permanent"] = "no"
    hang_stop: bool = False  # stop() never returns (a peer that does not answer)
    route: str | None = None
    greeting: str = "hello"


class Probe:
    config_model: ClassVar[type[ProbeConfig]] = ProbeConfig

    def __init__(self, name: str, config: ProbeConfig) -> None:
        self.name = name
        self.config = config
        self._since = datetime.now(UTC)

    def _mark(self, what: str) -> None:
        with Path(self.config.marker).open("a") as out:
            out.write(f"{what} {self.name}\n")

    async def start(self, ctx: ComponentContext) -> None:
        self._mark("start")
        if self.config.fail_start == "temporary":
            raise StartError("peer not reachable yet")
        if self.config.fail_start == "permanent":
            raise PermanentStartError("wrong password for probe")
        ctx.create_task(self._work(), "work")
        if self.config.route:
            greeting = self.config.greeting

            async def hello(request: web.Request) -> web.Response:
                return web.Response(text=f"{greeting} from {self.name}")

            ctx.add_route(self.config.route, hello)

    async def _work(self) -> None:
        if self.config.crash_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.config.crash_after or 0)
        raise RuntimeError("probe crashed on purpose")

    async def stop(self) -> None:
        self._mark("stop")
        if self.config.hang_stop:
            await asyncio.Event().wait()
            self._mark("stopped")  # never: the supervisor gives up first

    def health(self) -> Health:
        return Health(ComponentState.RUNNING, self._since, None, {"greetings": 0})
