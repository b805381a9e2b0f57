"""Waiting for the stream to move, and stopping a waiter at the moment it moves.

A daemon hung at SIGTERM (about one stop in 25 in the socket-activation test): the
first-response tracker was cancelled in the same loop step as the shutdown woke every
waiter, Python 3.11's wait_for dropped the cancel, and the tracker went back to
waiting for 30 s while the store waited for it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.config import CoreConfig
from gateway.first_response.tracker import FirstResponseTracker
from gateway.metrics import Metrics
from gateway.store.sqlite import SqliteStore
from gateway.stream import StreamNotifier


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
