"""The backlog of accepted mail (connectors/mail/backlog.py) with a stand-in intake."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from connectors.mail.backlog import Backlog
from connectors.mail.normalize import Prepared


@dataclass
class Pending:
    id: int
    raw: bytes
    recipients: tuple[str, ...] = ("support@example.com",)
    dedup_key: str = "k"
    mail_from: str | None = "ann@example.org"


@dataclass
class Intake:
    """Records what is prepared and delivered; `pending` is what the store holds at start."""

    pending: list[Pending] = field(default_factory=list)
    read: asyncio.Event = field(default_factory=asyncio.Event)
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: list[int] = field(default_factory=list)
    source: str = "/connectors/mail"

    @property
    def ingest(self) -> Intake:
        return self

    async def pending_raw_mail(self, connector: str, after: int, limit: int) -> list[Pending]:
        found = [m for m in self.pending if m.id > after][:limit]
        if found:
            self.read.set()
            await self.hold.wait()
        return found

    def prepare(self, raw_id: int, *args: Any) -> Prepared:
        return Prepared(raw_id, self.source, None, "stand-in")

    async def deliver(self, prepared: Prepared) -> None:
        self.delivered.append(prepared.raw_id)


def _backlog(intake: Intake, **limits: int) -> tuple[Backlog, list[asyncio.Task[Any]]]:
    tasks: list[asyncio.Task[Any]] = []

    def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
        tasks.append(asyncio.create_task(coro, name=name))
        return tasks[-1]

    options = {"max_mails": 3, "max_bytes": 100, **limits}
    return Backlog(intake, "connectors.mail", spawn=spawn, **options), tasks  # type: ignore[arg-type]


async def _settle(tasks: list[asyncio.Task[Any]]) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)


async def test_places_are_bounded_by_count_and_bytes() -> None:
    backlog, _ = _backlog(Intake())
    assert backlog.reserve(500)  # alone, any size
    assert not backlog.reserve(1)  # past the bytes
    backlog.release(500)
    assert [backlog.reserve(30) for _ in range(4)] == [True, True, True, False]  # the count
    assert backlog.size == 3 and backlog.refused == 2


async def test_mail_is_taken_in_order_and_frees_its_place() -> None:
    intake = Intake()
    backlog, tasks = _backlog(intake)
    runner = asyncio.create_task(backlog.run())
    for raw_id in (5, 6, 7):
        assert backlog.reserve(10)
        backlog.add(raw_id, b"x" * 10, ["support@example.com"], "k", None)
    await _settle(tasks)
    assert intake.delivered == [5, 6, 7]
    assert backlog.size == 0 and backlog.normalized == 3 and backlog.reserve(100)
    runner.cancel()


async def test_a_mail_read_by_the_recovery_is_not_taken_twice() -> None:
    """A mail committed in this run can be read by the start's recovery in the moment
    between its commit and its session adding it to the backlog."""
    intake = Intake(pending=[Pending(1, b"old"), Pending(2, b"just committed")])
    backlog, tasks = _backlog(intake)
    runner = asyncio.create_task(backlog.run())
    assert backlog.reserve(14)  # the session of mail 2 ...
    await intake.read.wait()  # ... whose commit the recovery already sees
    intake.hold.set()
    await _settle(tasks)
    backlog.add(2, b"just committed", ["support@example.com"], "k", None)
    assert backlog.reserve(1)
    backlog.add(3, b"x", ["support@example.com"], "k", None)
    await _settle(tasks)
    assert intake.delivered == [1, 2, 3]
    assert backlog.size == 0 and backlog.recovered == 2
    runner.cancel()
