"""The delivery engine: a backend's stream position, its lanes, retries and dead letters.

Each conversation is a lane whose events go one after the other, in stream
order; lanes go concurrently (up to `concurrency`), so one slow ticket does not
hold up the rest. The durable position is a low-water mark plus the offsets
above it already finished, so finishing out of order never skips an event. A
failure is handled by its class (failures.py): temporary ones wait with capped,
jittered backoff (a Retry-After holds the whole backend), a permanent one parks
that event and its lane goes on. The sink only talks to its helpdesk; order,
retries, positions and the record of what finished are all here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from gateway.component import ComponentState
from gateway.delivery.failures import (
    AlreadyExists,
    DeliveryFailure,
    EndpointGone,
    PermanentFailure,
    TemporaryFailure,
    Unauthorized,
)
from gateway.delivery.model import (
    Attempt,
    Commit,
    DeliveryStats,
    QueuedItem,
    Sink,
    StreamEvent,
)
from gateway.delivery.position import PendingOffsets
from gateway.delivery.retry import Backoff
from gateway.delivery.settings import DeliverySection
from gateway.store import Store, StoreError, Tx
from gateway.store.delivery import DeadLetter, Position
from gateway.stream import StreamReader

__all__ = ["Attempt", "Commit", "DeliveryEngine", "DeliveryStats", "Sink", "StreamEvent"]

BATCH = 200
# Events that can start a first-response clock: their delivery time is its middle stage.
STAGE_TYPES = frozenset(("helpline.message.inbound.v1", "helpline.call.ringing.v1"))
IDLE_WAIT = 5.0  # how often an idle engine looks for dead letters to replay
POSITION_EVERY = 1.0  # an idle low-water mark is saved at most this often


class DeliveryEngine:
    def __init__(
        self,
        name: str,
        sink: Sink,
        settings: DeliverySection,
        store: Store,
        stream: StreamReader,
        *,
        log: structlog.stdlib.BoundLogger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.own_source = f"/backends/{name}"
        self._sink = sink
        self._settings = settings
        self._store = store
        self._stream = stream
        self._log = log or structlog.get_logger("gateway.delivery").bind(backend=name)
        self._clock = clock
        self.stats = DeliveryStats()
        self._lanes: dict[str, deque[QueuedItem]] = {}
        self._busy: set[str] = set()
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._offsets = PendingOffsets(Position(0, 0, frozenset()))
        self._replaying: set[int] = set()
        self._saved_low = 0
        self._saved_at = 0.0
        self._backoff = Backoff(settings)
        self._space = asyncio.Event()
        self._poked = asyncio.Event()
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- the position ------------------------------------------------------
    async def _load(self) -> None:
        position = await self._store.delivery.position(self.name)
        if position is None:
            start = self._settings.start
            head = self._stream.head
            low = head if start == "now" else 0 if start == "beginning" else min(int(start), head)
            now = self._clock()

            async def init(tx: Tx) -> None:
                await tx.init_position(self.name, low, now)

            await self._store.write(init)
            position = Position(low, low, frozenset())
            self._log.info("backend.position_created", start=str(start), low_water=low)
        self._saved_low = position.low_water
        self.stats.low_water = self.stats.frontier = position.low_water
        self._offsets = PendingOffsets(position)

    # -- running -----------------------------------------------------------
    async def run(self) -> None:
        """Deliver until cancelled; the caller (the backend component) owns this task."""
        await self._load()
        self.stats.state = ComponentState.RUNNING
        workers = [
            asyncio.create_task(self._worker(), name=f"{self.name}-lane-{n}")
            for n in range(self._settings.concurrency)
        ]
        try:
            await self._dispatch()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def counters(self) -> dict[str, int]:
        """The figures every backend's health shows in /readyz."""
        return self.stats.counters(self._stream.head, self._clock())

    def poke(self) -> None:
        """Look for dead letters to replay now rather than at the next idle check."""
        self._poked.set()

    def _close(self) -> None:
        self._closing = True
        self._poked.set()
        self._space.set()

    async def drain(self, timeout: float) -> None:
        """Stop taking new events and give the ones being delivered `timeout` to finish."""
        self._close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: it can lose a cancel
                await self._idle.wait()

    async def _dispatch(self) -> None:
        while not self._closing:
            if self._poked.is_set():  # an operator asked for a replay: not after the backlog
                self._poked.clear()
                await self._take_replays()
            if len(self._offsets) + len(self._replaying) >= self._settings.max_queued:
                self._space.clear()
                await self._space.wait()
                continue
            if self.stats.state is ComponentState.FAILED:
                return
            room = self._settings.max_queued - len(self._offsets) - len(self._replaying)
            batch = await self._stream.read(self._offsets.frontier, min(BATCH, room))
            if not batch:
                await self._save_idle_position()
                await self._take_replays()
                await self._wait_for_more()
                continue
            last = batch[-1][0]
            if last > self._offsets.dispatched:
                # Reserved ahead, so the durable mark costs one write per max_queued events,
                # not one per batch; after a crash, up to that many events never sent are
                # looked up before they are created (harmless, and bounded).
                mark = last + self._settings.max_queued
                await self._write(self._dispatched_to(mark))
                self._offsets.dispatched = mark
            for offset, body in batch:
                if not self._offsets.read(offset):
                    continue  # finished in an earlier run
                event = self._parse(offset, body)
                if event is None or event.source == self.own_source:
                    continue
                if not self._wanted(event):
                    continue
                self._offsets.add(offset, event.time)
                self._enqueue(QueuedItem(event))
            self.stats.frontier = self._offsets.frontier

    def _parse(self, offset: int, body: bytes) -> StreamEvent | None:
        try:
            return StreamEvent.parse(offset, body)
        except (ValueError, KeyError, TypeError) as err:  # a malformed envelope: not ours to fix
            self._log.error("backend.unreadable_event", offset=offset, error=str(err))
            return None

    def _wanted(self, event: StreamEvent) -> bool:
        try:
            return self._sink.wants(event)
        except Exception:  # noqa: BLE001 - a sink's bug skips one event, never the backend
            self._log.exception("backend.wants_failed", offset=event.offset, event_id=event.id)
            return False

    def _dispatched_to(self, offset: int) -> Callable[[Tx], Awaitable[None]]:
        now = self._clock()

        async def unit(tx: Tx) -> None:
            await tx.set_dispatched(self.name, offset, now)

        return unit

    async def _wait_for_more(self) -> None:
        poked = asyncio.ensure_future(self._poked.wait())
        more = asyncio.ensure_future(self._stream.wait(self._offsets.frontier, IDLE_WAIT))
        try:
            await asyncio.wait({poked, more}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poked.cancel()
            more.cancel()
        self._poked.clear()

    async def _save_idle_position(self) -> None:
        """Move the saved low-water mark over events this backend skipped."""
        low = self._offsets.low_water()
        self.stats.low_water = low
        now = self._clock()
        if low > self._saved_low and now - self._saved_at >= POSITION_EVERY:
            await self._write(self._low_water_at(low, now))
            self._saved_low, self._saved_at = low, now

    def _low_water_at(self, low: int, now: float) -> Callable[[Tx], Awaitable[None]]:
        async def unit(tx: Tx) -> None:
            await tx.finish_event(self.name, low, low, now)

        return unit

    async def _take_replays(self) -> None:
        letters = await self._store.delivery.replays_requested(self.name, BATCH)
        for letter in letters:
            if letter.offset in self._replaying:
                continue
            body = await self._store.delivery.event_at(letter.offset)
            if body is None:  # the stream no longer holds it (erased): nothing to send
                await self._write(self._unparked(letter.offset))
                continue
            event = self._parse(letter.offset, body)
            if event is None:
                continue
            self._replaying.add(letter.offset)
            self._enqueue(QueuedItem(event, replay=True))
            self._log.info("backend.replaying", offset=letter.offset, event_id=letter.event_id)

    def _unparked(self, offset: int) -> Callable[[Tx], Awaitable[None]]:
        async def unit(tx: Tx) -> None:
            await tx.unpark(self.name, offset)

        return unit

    def _enqueue(self, item: QueuedItem) -> None:
        lane = item.event.lane
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = deque()
        queue.append(item)
        if len(queue) == 1 and lane not in self._busy:
            self._ready.put_nowait(lane)
        self._update_queue_stats()

    async def _worker(self) -> None:
        while True:
            lane = await self._ready.get()
            queue = self._lanes.get(lane)
            if not queue:
                continue
            self._busy.add(lane)
            self._idle.clear()
            try:
                await self._handle(queue[0])
            except Exception as err:  # noqa: BLE001 - recording what finished failed
                # The event stays unfinished (the low-water mark holds, the lag shows);
                # the worker goes on with other lanes rather than dying unseen.
                self._log.exception("backend.worker_error", offset=queue[0].event.offset)
                self.stats.state = ComponentState.DEGRADED
                self.stats.last_error = f"internal error: {type(err).__name__}: {err}"
            finally:
                queue.popleft()
                self._busy.discard(lane)
                if queue:
                    self._ready.put_nowait(lane)
                else:
                    self._lanes.pop(lane, None)
                if not self._busy:
                    self._idle.set()
                self._update_queue_stats()

    def _update_queue_stats(self) -> None:
        self.stats.queued = len(self._offsets) + len(self._replaying)
        self.stats.in_flight = len(self._busy)
        self.stats.oldest_pending_at = self._offsets.oldest_time()

    # -- one event ---------------------------------------------------------
    async def _handle(self, item: QueuedItem) -> None:
        event = item.event
        maybe_sent = item.replay or event.offset <= self._offsets.maybe_sent_upto
        number = 1
        while not self._closing:  # closing: what is not finished stays for the next run
            await self._backoff.hold()
            try:
                commit = await self._sink.deliver(event, Attempt(number, maybe_sent))
            except EndpointGone as err:
                self.stats.state = ComponentState.FAILED
                self.stats.last_error = f"{err} (the endpoint is gone; delivery stopped)"
                self._log.error("backend.endpoint_gone", error=str(err))
                self._close()
                return
            except (TemporaryFailure, AlreadyExists) as err:
                # AlreadyExists here means the sink could not resolve it: try again later.
                maybe_sent = maybe_sent or getattr(err, "ambiguous", False)
                await self._wait_after(event, err, number)
                number += 1
                continue
            except PermanentFailure as err:
                await self._park(item, err.status, str(err), number)
                return
            except DeliveryFailure as err:
                await self._park(item, err.status, str(err), number)
                return
            except Exception as err:  # noqa: BLE001 - a sink's bug parks the event, not the lane
                self._log.exception("backend.sink_error", offset=event.offset, event_id=event.id)
                await self._park(item, None, f"internal error: {type(err).__name__}: {err}", number)
                return
            await self._finish(item, commit)
            return

    async def _wait_after(self, event: StreamEvent, err: DeliveryFailure, number: int) -> None:
        delay = self._backoff.failed(number, getattr(err, "retry_after", None))
        self.stats.retries += 1
        self.stats.reachable = getattr(err, "reachable", True)
        if isinstance(err, Unauthorized):
            self.stats.authenticated = False
        self.stats.state = ComponentState.DEGRADED
        self.stats.last_error = str(err)
        self._log.warning(
            "backend.retry",
            offset=event.offset,
            event_id=event.id,
            conversation_id=event.conversation_id,
            attempt=number,
            delay=round(delay, 2),
            error=str(err),
            unauthorized=isinstance(err, Unauthorized),
        )
        await asyncio.sleep(delay)

    def _succeeded(self) -> None:
        self._backoff.succeeded()
        self.stats.reachable = self.stats.authenticated = True
        if self.stats.state is ComponentState.DEGRADED:
            self.stats.state = ComponentState.RUNNING
            self.stats.last_error = None

    async def _finish(self, item: QueuedItem, commit: Commit | None) -> None:
        event = item.event
        self._succeeded()

        now = self._clock()

        async def unit(tx: Tx) -> None:
            if commit is not None:
                await commit(tx)
            if event.type in STAGE_TYPES:
                await tx.put_delivered(event.id, self.name, now)
            if item.replay:
                await tx.unpark(self.name, event.offset)
            else:
                await self._mark_finished(tx, event.offset)

        await self._write(unit)
        self._release(item)
        self.stats.delivered += 1

    async def _park(self, item: QueuedItem, status: int | None, error: str, attempts: int) -> None:
        event = item.event
        if status is not None:
            self._succeeded()  # the backend answered: it is up
        letter = DeadLetter(
            backend=self.name,
            offset=event.offset,
            event_id=event.id,
            type=event.type,
            conversation_id=event.conversation_id,
            status=status,
            error=error,
            attempts=attempts,
            parked_at=self._clock(),
        )

        async def unit(tx: Tx) -> None:
            await tx.park(letter)
            if not item.replay:
                await self._mark_finished(tx, event.offset)

        await self._write(unit)
        self._release(item)
        self.stats.parked += 1
        self._log.error(
            "backend.parked",
            offset=event.offset,
            event_id=event.id,
            conversation_id=event.conversation_id,
            status=status,
            error=error,
        )

    async def _mark_finished(self, tx: Tx, offset: int) -> None:
        """Inside the finishing transaction: what the low-water mark becomes without `offset`."""
        low = self._offsets.low_water_without(offset)
        await tx.finish_event(self.name, offset, low, self._clock())

    def _release(self, item: QueuedItem) -> None:
        offset = item.event.offset
        if item.replay:
            self._replaying.discard(offset)
        else:
            low = self._offsets.finish(offset)
            self._saved_low = max(self._saved_low, low)
            self.stats.low_water = low
        if not self._space.is_set():
            self._space.set()

    async def _write(self, unit: Callable[[Tx], Awaitable[None]]) -> None:
        """A write the engine cannot do without (what finished): retried until the store
        takes it, since the delivery it records has already happened."""
        delay = 0.05
        while True:
            try:
                await self._store.write(unit)
                return
            except StoreError as err:
                self._log.warning("backend.store_retry", error=str(err), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
