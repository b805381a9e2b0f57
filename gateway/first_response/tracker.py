"""The first-response tracker: follows the stream, keeps the clocks, emits met and breached.

It reads the stream from its own durable position and applies each event to
its conversation's clock in one transaction with that position and any event
it emits, so a crash never loses or repeats a `met`. Breaches come from a
timer on the earliest due clock; a breach is emitted only once the tracker
has read the whole stream (a reply committed just before the target must win),
and one that fell due while the daemon was down is emitted at start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from gateway.business_hours import ALWAYS, BusinessTime, Calendar
from gateway.config import CHANNELS, CoreConfig
from gateway.event_base import EventData
from gateway.events import Event, EventType
from gateway.events_timing import FirstResponseBreached, FirstResponseMet, Stages
from gateway.first_response.rules import Change, ChannelPolicy, Outcome, step
from gateway.first_response.waiting import AGE_BANDS, RunningClocks
from gateway.metrics import Metrics
from gateway.store import ClockRow, Store, Tx
from gateway.stream import StreamNotifier

log = structlog.get_logger("gateway.first_response")

CURSOR = "first_response"
BATCH = 200
IDLE_CHECK = 30.0  # wake up at least this often (a clock set back, a due time recomputed)
SOURCE = "/core"
RETRY_START, RETRY_CAP = 0.05, 5.0  # after a failed read (a full pending queue, a store down)
WAITING_EVERY = 5.0  # seconds of the daemon's clock between two counts of the waiting


def policies(config: CoreConfig) -> dict[str, ChannelPolicy]:
    calendars: dict[str, BusinessTime] = {
        name: Calendar.from_config(cfg) for name, cfg in config.business_hours.items()
    }
    fr = config.first_response
    found = {}
    for channel in CHANNELS:
        name = fr.business_hours.get(channel)  # type: ignore[call-overload]
        hours = calendars[name] if name else ALWAYS
        found[channel] = ChannelPolicy(getattr(fr.targets, channel), name, hours)
    return found


class FirstResponseTracker:
    def __init__(
        self,
        store: Store,
        notifier: StreamNotifier,
        config: CoreConfig,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._metrics = metrics
        self._clock = clock
        self.config = config
        self._after = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._waiting_at = float("-inf")
        self._running = RunningClocks()

    @property
    def config(self) -> CoreConfig:
        return self._config

    @config.setter
    def config(self, config: CoreConfig) -> None:
        """New targets apply to clocks started from now on (a started one keeps its due time)."""
        self._config = config
        self._policies = policies(config)

    async def start(self) -> None:
        cursor = await self._store.get_cursor(CURSOR)
        if cursor is None:
            # First start on this store: clocks run from now on. An upgraded store with
            # years of history is not replayed (that would hold up the start for minutes).
            cursor = self._store.head_offset()
            await self._save_cursor(cursor)
        self._after = cursor
        self._running = RunningClocks(await self._store.running_clocks())
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="first-response")

    async def _save_cursor(self, offset: int) -> None:
        async def unit(tx: Tx) -> None:
            await tx.set_cursor(CURSOR, offset, self._clock())

        await self._store.write(unit)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def tick(self) -> None:
        """Read everything committed so far, then emit the breaches that are due."""
        async with self._lock:
            while await self._read_batch():
                pass
            await self._breach_due()
            await self._refresh_waiting()

    async def _run(self) -> None:
        retry = RETRY_START
        while True:
            try:
                await self.tick()
                due = await self._store.next_due()
            except Exception as err:  # noqa: BLE001 - the store may be full or down a while
                log.warning(
                    "first_response.failed", error=f"{type(err).__name__}: {err}", retry_in=retry
                )
                # Never straight back: with events unread the wait below returns at once,
                # and a loop that never yields starves the commit it waits for.
                await asyncio.sleep(retry)
                retry = min(RETRY_CAP, retry * 2)
                continue
            retry = RETRY_START
            wait = IDLE_CHECK if due is None else min(IDLE_CHECK, max(0.0, due - self._clock()))
            await self._notifier.wait_beyond(self._after, wait)

    async def _read_batch(self) -> bool:
        """Apply the next events past the cursor. They are read by the writer's own
        transaction, which sees every commit (and has the pages in its cache); only the
        types that can change a clock are parsed."""
        if self._store.head_offset() <= self._after:
            return False
        done: list[Outcome] = []  # the clocks written, applied to memory once committed
        last = self._after

        async def unit(tx: Tx) -> None:
            nonlocal last
            done.clear()
            rows = await tx.stream_after(self._after, BATCH)
            if not rows:
                last = self._after
                return
            opened: set[str] = set()  # conversations of this batch that have no clock yet
            for _, kind, conversation, body in rows:
                if kind == EventType.CONVERSATION_OPENED and conversation:
                    opened.add(conversation)
                elif kind in _RELEVANT:
                    outcome = await self._apply(tx, orjson.loads(body), opened)
                    if outcome is not None:
                        done.append(outcome)
            last = rows[-1][0]
            await tx.set_cursor(CURSOR, last, self._clock())

        await self._store.write(unit)
        if last == self._after:
            return False
        self._after = last
        for outcome in done:
            self._committed(outcome)
        return True

    async def _apply(self, tx: Tx, event: dict[str, Any], opened: set[str]) -> Outcome | None:
        """`opened`: conversations known to have no clock, so none is looked up."""
        data = event["data"]
        conversation = data.get("conversation_id") if isinstance(data, dict) else None
        if not conversation:
            return None
        if conversation in opened:
            opened.discard(conversation)  # it may have one from here on
            latest = None
        else:
            latest = await tx.latest_clock(conversation)
        at = datetime.fromisoformat(event["time"]).timestamp()
        outcome = step(latest, event, at, self._policies, self.config.first_response.max_skew)
        if outcome.clock is None:
            return None
        await tx.put_clock(outcome.clock)
        if outcome.change is Change.MET:
            await tx.append(_met_event(outcome.clock, self._clock()))
        return outcome

    async def _breach_due(self) -> None:
        now = self._clock()
        for row in await self._store.due_clocks(now, BATCH):

            async def unit(tx: Tx, row: ClockRow = row) -> bool:
                return await self._breach(tx, row, now)

            if await self._store.write(unit):
                self._metrics.fr_breaches.labels(row.channel).inc()
                log.info(
                    "first_response.breached",
                    conversation_id=row.conversation_id,
                    channel=row.channel,
                    target=row.target,
                )

    async def _breach(self, tx: Tx, row: ClockRow, now: float) -> bool:
        if await tx.events_after(self._after, 1):
            return False  # unread events first: one may be the answer
        latest = await tx.latest_clock(row.conversation_id)
        if latest is None or latest.id != row.id or latest.state != "running":
            return False
        if latest.breached_at is not None:
            return False
        latest.breached_at = now
        await tx.put_clock(latest)
        await tx.append(_breach_event(latest, now))
        return True

    def _committed(self, outcome: Outcome) -> None:
        row = outcome.clock
        if row is None or row.id is None:
            return
        if outcome.change is Change.STARTED:
            self._running.started(row.id, row.channel, row.started_at)
        elif outcome.change in (Change.MET, Change.CANCELLED):
            self._running.stopped(row.id)
        if outcome.change is Change.MET:
            self._observe(row)

    def _observe(self, row: ClockRow) -> None:
        m = self._metrics
        seconds = row.seconds or 0.0
        m.fr_seconds.labels(row.channel).observe(seconds)
        (m.fr_within if row.within_target else m.fr_past).labels(row.channel).inc()

    async def _refresh_waiting(self) -> None:
        """The waiting gauge, at most every few seconds: tick() runs at every commit."""
        now = self._clock()
        if now - self._waiting_at < WAITING_EVERY:
            return
        self._waiting_at = now
        counts = self._running.counts(now, AGE_BANDS)
        for channel in CHANNELS:
            for band in AGE_BANDS:
                self._metrics.fr_waiting.labels(channel, band).set(counts.get((channel, band), 0))


# What can start, stop, end or re-arm a clock; everything else is passed by unread.
_RELEVANT = frozenset(
    {
        EventType.MESSAGE_INBOUND,
        EventType.MESSAGE_OUTBOUND,
        EventType.CALL_RINGING,
        EventType.CALL_ANSWERED,
        EventType.CONVERSATION_RESOLVED,
        EventType.CONVERSATION_REOPENED,
    }
)


def _when(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _met_event(row: ClockRow, now: float) -> Event:
    customer = None if row.customer_at is None else row.started_at - row.customer_at
    data = FirstResponseMet(
        conversation_id=row.conversation_id,
        conversation_number=row.conversation_number,
        contact_id=row.contact_id,
        channel=row.channel,
        reply_channel=row.reply_channel,
        reply_event_id=row.reply_event_id or "",
        started_at=_when(row.started_at),
        stopped_at=_when(row.stopped_at or now),
        seconds=row.seconds or 0.0,
        business_seconds=row.business_seconds,
        target_seconds=row.target,
        within_target=bool(row.within_target),
        stages=Stages(customer_to_accepted=customer, accepted_to_reply=row.seconds or 0.0),
    )
    return _event(EventType.FIRST_RESPONSE_MET, row, data, now)


def _breach_event(row: ClockRow, now: float) -> Event:
    data = FirstResponseBreached(
        conversation_id=row.conversation_id,
        conversation_number=row.conversation_number,
        contact_id=row.contact_id,
        channel=row.channel,
        started_at=_when(row.started_at),
        due_at=_when(row.due_at),
        target_seconds=row.target,
        business_hours=row.calendar,
    )
    return _event(EventType.FIRST_RESPONSE_BREACHED, row, data, now)


def _event(kind: EventType, row: ClockRow, data: EventData, at: float) -> Event:
    return Event.on_conversation(
        kind,
        conversation_id=row.conversation_id,
        contact_id=row.contact_id,
        data=data,
        source=SOURCE,
        at=at,
    )
