"""What every fake helpdesk shares: its own thread and loop, a request log and armed faults.

A fake serves on 127.0.0.1 from a thread of its own, so a test in the daemon's
event loop, a sync test driving a daemon subprocess, and the daemon itself can
all reach it. A test arms a fault for the next N matching requests; the faults
reproduce what makes delivery hard: an answer lost after the server committed
(the create-once problem), refusals before it did anything, slowness and
throttling. State is guarded by one lock, taken by handlers on the fake's
thread and by the test reading it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Status:
    """Answer `code` before the handler runs: nothing is committed."""

    code: int
    body: Any = None  # JSON-serialisable, or str for a text body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Slow:
    """Wait, then handle normally (commits after the wait)."""

    seconds: float


@dataclass(frozen=True)
class DelayThenCommit:
    """Commit at once, then hold the answer back (past the client's timeout)."""

    seconds: float


@dataclass(frozen=True)
class CommitThenReset:
    """Commit, then cut the connection without an answer."""


@dataclass(frozen=True)
class RejectThenCommit:
    """Commit, then answer `code` as if it had failed."""

    code: int = 500


@dataclass(frozen=True)
class Reset:
    """Cut the connection before doing anything."""


Fault = Status | Slow | DelayThenCommit | CommitThenReset | RejectThenCommit | Reset


@dataclass
class Armed:
    fault: Fault
    method: str | None
    path: re.Pattern[str] | None
    times: int


@dataclass
class Recorded:
    """One request as the fake saw it, logged on arrival; `status` is 0 until it is answered
    (and stays 0 when the fault cut the connection)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    status: int
    fault: str | None


class FakeService:
    """Subclass and add the vendor's routes in `routes`; `start()` serves, `stop()` ends."""

    def __init__(self, *, clock: Callable[[], float] = time.time, port: int = 0) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.requests: list[Recorded] = []
        self._armed: list[Armed] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.port = port  # 0: any free one; a fixed one lets a test start it late

    # -- to override -------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as err:  # surfaced to start()'s caller
                failure.append(err)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start within 10 s")
        if failure:
            raise RuntimeError(f"{type(self).__name__} failed to start") from failure[0]
        return self

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self.routes(app)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._stopping = asyncio.Event()
        ready.set()
        await self._stopping.wait()
        await self._runner.cleanup()
        # Webhook deliveries still in flight or waiting to retry end here, on this loop;
        # left pending, the closed loop's garbage collection finalizes them mid-request.
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is None or self._stopping is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the fake's loop from another thread (a webhook it emits)."""
        assert self._loop is not None, "the fake is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- faults and the request log ----------------------------------------
    def arm(
        self,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` requests matching `method` and the regex `path` meet `fault`."""
        with self.lock:
            self._armed.append(
                Armed(
                    fault,
                    method.upper() if method else None,
                    re.compile(path) if path else None,
                    times,
                )
            )

    def disarm(self) -> None:
        with self.lock:
            self._armed.clear()

    def recorded(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        pattern = re.compile(path) if path else None
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (pattern is None or pattern.search(r.path))
            ]

    def _take_fault(self, request: web.Request) -> Fault | None:
        with self.lock:
            for armed in self._armed:
                if armed.method and armed.method != request.method:
                    continue
                if armed.path and not armed.path.search(request.path):
                    continue
                armed.times -= 1
                if armed.times <= 0:
                    self._armed.remove(armed)
                return armed.fault
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        fault = self._take_fault(request)
        record = Recorded(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            body,
            self.clock(),
            0,
            type(fault).__name__ if fault else None,
        )
        with self.lock:
            self.requests.append(record)
        try:
            response = await self._apply(fault, request, handler)
            record.status = response.status
            return response
        except web.HTTPException as err:
            record.status = err.status
            raise

    async def _apply(
        self, fault: Fault | None, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if fault is None:
            return await handler(request)
        if isinstance(fault, Status):
            if isinstance(fault.body, str):
                return web.Response(status=fault.code, text=fault.body, headers=fault.headers)
            return web.json_response(
                fault.body if fault.body is not None else {"error": "fault"},
                status=fault.code,
                headers=fault.headers,
            )
        if isinstance(fault, Reset):
            _cut(request)
            raise ConnectionResetError("fault: reset")
        if isinstance(fault, Slow):
            await asyncio.sleep(fault.seconds)
            return await handler(request)
        response = await handler(request)  # the commit happens here
        if isinstance(fault, DelayThenCommit):
            await asyncio.sleep(fault.seconds)
            return response
        if isinstance(fault, CommitThenReset):
            _cut(request)
            raise ConnectionResetError("fault: reset after commit")
        return web.json_response({"error": "fault after commit"}, status=fault.code)


def _cut(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
