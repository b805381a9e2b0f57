"""Waiting for the stream to move, stopping a waiter at the moment it moves, and a
follower that cannot write backing off rather than spinning.

A daemon hung at SIGTERM (about one stop in 25 in the socket-activation test): the
first-response tracker was cancelled in the same loop step as the shutdown woke every
waiter, Python 3.11's wait_for dropped the cancel, and the tracker went back to
waiting for 30 s while the store waited for it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import pytest

from gateway.config import CoreConfig
from gateway.dedup import IdempotencyKey
from gateway.first_response.tracker import FirstResponseTracker
from gateway.identity import Handles
from gateway.ingest import Inbound, Ingestor
from gateway.metrics import Metrics
from gateway.store import Overloaded, Store
from gateway.store.sqlite import SqliteStore
from gateway.stream import StreamNotifier
from tests.conftest import until


async def test_a_waiter_hears_a_commit_and_times_out_without_one() -> None:
    notifier = StreamNotifier(head=3)
    assert await notifier.wait_beyond(2, 5.0)  # already past
    assert not await notifier.wait_beyond(3, 0.01)
    waiter = asyncio.create_task(notifier.wait_beyond(3, 5.0))
    await asyncio.sleep(0)
    notifier.committed(4)
    assert await waiter
    assert notifier.head == 4


@pytest.mark.parametrize("wake", ["committed", "wake_all"])
async def test_a_waiter_cancelled_as_the_stream_moves_is_cancelled(wake: str) -> None:
    notifier = StreamNotifier()
    waiter = asyncio.create_task(notifier.wait_beyond(0, 30.0))
    await asyncio.sleep(0)  # it is waiting now
    if wake == "committed":
        notifier.committed(1)
    else:
        notifier.wake_all()
    waiter.cancel()  # the same loop step, as at shutdown
    await asyncio.wait({waiter}, timeout=5.0)
    assert waiter.cancelled(), f"the cancel was lost: the waiter returned {waiter.result()!r}"


async def test_the_tracker_stops_when_cancelled_as_the_stream_moves(tmp_path: Path) -> None:
    notifier = StreamNotifier()
    store = SqliteStore(tmp_path / "helpline.db", on_commit=notifier.committed)
    await store.open()
    tracker = FirstResponseTracker(store, notifier, CoreConfig(), Metrics(), time.time)
    await tracker.start()
    try:
        await asyncio.sleep(0.2)  # it has read the (empty) stream and waits for more
        notifier.wake_all()
        stopping = asyncio.create_task(tracker.stop())
        done, _ = await asyncio.wait({stopping}, timeout=5.0)  # it would wait 30 s
        assert stopping in done, "the tracker did not stop: its cancel was lost"
    finally:
        await store.close()


class _Spinning(BaseException):
    """Ends a tracker that keeps retrying without letting the loop run."""


class _Refusing:
    """The store as the tracker sees it while the pending queue is full: writes refused."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.refuse = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def write(self, unit: Any) -> Any:
        if self.refuse:
            raise Overloaded("1 writes are waiting for a commit")
        return await self._store.write(unit)


async def test_a_tracker_refused_by_a_full_queue_waits_instead_of_spinning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon hung in CI this way: the tracker's write was refused (max_pending), events
    # were unread so its wait returned at once, and the loop never ran the commit it needed.
    notifier = StreamNotifier()
    store = SqliteStore(tmp_path / "helpline.db", on_commit=notifier.committed)
    await store.open()
    full = _Refusing(store)
    tracker = FirstResponseTracker(cast(Store, full), notifier, CoreConfig(), Metrics(), time.time)
    await tracker.start()
    ticks = 0
    tick = tracker.tick

    async def counted() -> None:
        nonlocal ticks
        ticks += 1
        if ticks > 50:
            raise _Spinning
        await tick()

    monkeypatch.setattr(tracker, "tick", counted)
    full.refuse = True
    try:
        await Ingestor(store, CoreConfig(), Metrics()).ingest(_message())
        await asyncio.sleep(0.3)  # never resumes while the tracker spins
        assert ticks <= 10, f"the tracker retried {ticks} times without waiting"
        full.refuse = False
        await until(lambda: tracker._after == store.head_offset())  # it catches up
    finally:
        await tracker.stop()
        await store.close()


def _message() -> Inbound:
    return Inbound(
        channel="api",
        source="/api/test",
        handles=Handles(email="ann@example.com"),
        text="Where is my order?",
        idempotency=IdempotencyKey("api:test", "msg:h:1", b"d" * 32, "key 1"),
    )
