"""Group commit: writes that arrive together share one durable commit.

A lone write is never delayed (a group is whatever is waiting when the
committer comes round), so latency at low load is one commit, while under
load one sync pays for many messages: this is what makes power-safe
durability affordable (TARGETS.md: 1 row per commit runs at the disk's fsync
rate, 100 rows per commit at four times that). The number of writes waiting
is bounded; past it `submit` raises Overloaded at once instead of queueing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import structlog

from gateway.store import Overloaded, StoreClosed, StoreUnavailable

T = TypeVar("T")
TxT = TypeVar("TxT")

log = structlog.get_logger("gateway.store")


class Engine(Protocol[TxT]):
    """The few transaction primitives the batcher needs from an engine."""

    tx: TxT

    def begin(self) -> None: ...

    def savepoint(self) -> None: ...

    def release(self) -> None: ...

    def rollback_to_savepoint(self) -> None: ...

    async def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def is_fatal(self, err: BaseException) -> bool:
        """Whether an error inside a unit broke the whole transaction, not just the unit."""
        ...


class _Fatal(Exception):
    """A unit's error that broke the whole transaction (disk full, I/O error)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(slots=True)
class _Pending(Generic[T]):
    unit: Callable[[Any], Awaitable[T]]
    future: asyncio.Future[T]


class Batcher(Generic[TxT]):
    def __init__(
        self,
        engine: Engine[TxT],
        *,
        max_pending: int,
        max_batch: int,
        on_commit: Callable[[float, int], None],
    ) -> None:
        self._engine = engine
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: deque[_Pending[Any]] = deque()
        self._pending = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-committer")

    async def submit(self, unit: Callable[[TxT], Awaitable[T]]) -> T:
        if self._closing:
            raise StoreClosed("the store is closing")
        if self._pending >= self._max_pending:
            raise Overloaded(f"{self._pending} writes are waiting for a commit")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(unit, future))
        self._pending += 1
        self._wake.set()
        try:
            return await future
        finally:
            self._pending -= 1

    async def close(self) -> None:
        """Take no more writes, commit everything already accepted, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            take = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(take)]
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending[Any]]) -> None:
        """Run the units, commit, answer. Units almost never fail, so they first run
        without a savepoint each (one costs about as much as a small unit); if one does
        fail, nothing of that try is kept and the group runs again with savepoints, so
        the failing unit fails alone. Units read and write only the transaction, so
        running one twice is safe: the first run left nothing behind."""
        engine = self._engine
        started = time.perf_counter()
        try:
            engine.begin()
        except Exception as err:  # noqa: BLE001 - the store cannot even start a transaction
            self._fail_all(batch, err)
            return
        try:
            outcomes = await self._run_units(batch, guarded=False)
            if outcomes is None:
                engine.rollback()
                engine.begin()
                outcomes = await self._run_units(batch, guarded=True) or []
        except _Fatal as fatal:
            self._rollback(batch, fatal.error)
            return
        except Exception as err:  # noqa: BLE001 - rollback or begin failed: the store is broken
            self._rollback(batch, err)
            return
        try:
            await engine.commit()
        except Exception as err:  # noqa: BLE001 - every caller of the group hears of it
            self._rollback(batch, err)
            return
        self.last_error = None
        self._on_commit(time.perf_counter() - started, len(batch))
        for item, result, error in outcomes:
            if item.future.done():
                continue
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(result)

    async def _run_units(
        self, batch: list[_Pending[Any]], *, guarded: bool
    ) -> list[tuple[_Pending[Any], Any, BaseException | None]] | None:
        """Every unit's outcome; None when unguarded and a unit failed (roll back, retry)."""
        engine = self._engine
        outcomes: list[tuple[_Pending[Any], Any, BaseException | None]] = []
        for item in batch:
            if item.future.cancelled():
                continue
            if guarded:
                engine.savepoint()
            try:
                result = await item.unit(engine.tx)
            except Exception as err:  # the unit's error goes to its caller
                if engine.is_fatal(err):
                    raise _Fatal(err) from err
                if not guarded:
                    return None
                engine.rollback_to_savepoint()
                engine.release()
                outcomes.append((item, None, err))
            else:
                if guarded:
                    engine.release()
                outcomes.append((item, result, None))
        return outcomes

    def _rollback(self, batch: list[_Pending[Any]], err: BaseException) -> None:
        try:
            self._engine.rollback()
        except Exception as rollback_err:  # noqa: BLE001 - the original error matters more
            log.error("store.rollback_failed", error=str(rollback_err))
        self._fail_all(batch, err)

    def _fail_all(self, batch: list[_Pending[Any]], err: BaseException) -> None:
        self.last_error = f"{type(err).__name__}: {err}"
        log.error("store.commit_failed", error=self.last_error, batch=len(batch))
        for item in batch:
            if not item.future.done():
                item.future.set_exception(StoreUnavailable(self.last_error))
