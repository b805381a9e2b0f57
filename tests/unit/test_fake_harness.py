"""The fake-helpdesk harness: its faults do what the backend tests rely on them doing."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.harness import (
    CommitThenReset,
    DelayThenCommit,
    FakeService,
    RejectThenCommit,
    Reset,
    Status,
)


class Counter(FakeService):
    def __init__(self) -> None:
        super().__init__()
        self.created = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/things", self._create)

    async def _create(self, request: web.Request) -> web.Response:
        with self.lock:
            self.created += 1
            n = self.created
        return web.json_response({"id": n}, status=201)


async def _post(url: str, timeout: float = 2.0) -> tuple[int, object]:
    limit = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=limit) as http,
        http.post(url + "/things", json={}) as response,
    ):
        return response.status, await response.json()


async def test_faults_commit_or_not_as_named() -> None:
    with Counter() as fake:
        assert isinstance(fake, Counter)
        assert await _post(fake.url) == (201, {"id": 1})

        fake.arm(Status(503, {"error": "busy"}, {"Retry-After": "2"}))
        assert await _post(fake.url) == (503, {"error": "busy"})
        assert fake.created == 1  # refused before committing

        fake.arm(RejectThenCommit(502))
        status, _ = await _post(fake.url)
        assert status == 502 and fake.created == 2

        fake.arm(CommitThenReset())
        with pytest.raises(aiohttp.ClientError):
            await _post(fake.url)
        assert fake.created == 3

        fake.arm(Reset())
        with pytest.raises(aiohttp.ClientError):
            await _post(fake.url)
        assert fake.created == 3

        fake.arm(DelayThenCommit(1.0))
        with pytest.raises(asyncio.TimeoutError):
            await _post(fake.url, timeout=0.3)
        assert fake.created == 4

        assert await _post(fake.url) == (201, {"id": 5})
        faults = [r.fault for r in fake.recorded("POST", "^/things$")]
        assert faults == [
            None,
            "Status",
            "RejectThenCommit",
            "CommitThenReset",
            "Reset",
            "DelayThenCommit",
            None,
        ]


async def test_a_fault_armed_for_a_path_leaves_others_alone() -> None:
    with Counter() as fake:
        fake.arm(Status(500), path="^/other", times=3)
        assert (await _post(fake.url))[0] == 201
        fake.disarm()
        fake.arm(Status(429), method="POST", times=2)
        assert [(await _post(fake.url))[0] for _ in range(3)] == [429, 429, 201]
