"""Runs one component: start with classified retries, restart after a crash, report its state.

A failure is logged once as a warning and then retried quietly with capped,
jittered backoff; a PermanentStartError (bad config, wrong credentials)
stops the retries and leaves its reason for /readyz. Every task a component
creates is owned here, so a crash in one restarts only that component and
stopping it leaves nothing running.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.component import (
    Component,
    ComponentContext,
    ComponentFactory,
    ComponentState,
    Health,
    PermanentStartError,
)
from gateway.config import ComponentSpec

BACKOFF_START = 1.0
BACKOFF_CAP = 60.0

log = structlog.get_logger("gateway.supervisor")


def backoff(attempt: int) -> float:
    delay = min(BACKOFF_CAP, BACKOFF_START * 2.0 ** max(0, attempt - 1))
    return float(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not security


class Supervisor:
    def __init__(
        self,
        spec: ComponentSpec,
        factory: ComponentFactory,
        make_context: Callable[[Supervisor], ComponentContext],
        stop_timeout: float,
        on_error: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.spec = spec
        self._factory = factory
        self._make_context = make_context
        self._stop_timeout = stop_timeout
        self._on_error = on_error
        self._component: Component | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._crashed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._state = ComponentState.NOT_STARTED
        self._since = datetime.now(UTC)
        self._last_error: str | None = None
        self._restarts = 0
        self.log = log.bind(component=spec.name, kind=spec.kind, type=spec.type)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_listener(self) -> bool:
        return bool(getattr(self._factory, "is_listener", False))

    def _set(self, state: ComponentState, error: str | None = None) -> None:
        self._state = state
        self._since = datetime.now(UTC)
        if error is not None:
            self._last_error = error

    def create_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.spec.key}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if err is not None:
            self._last_error = f"{type(err).__name__}: {err}"
            self.log.error("component.task_crashed", task=task.get_name(), error=self._last_error)
            self._on_error(self.spec.name)
            self._crashed.set()

    async def start(self) -> None:
        """Start the run loop; return after the first start attempt, whatever its outcome."""
        self._runner = asyncio.create_task(self._run(), name=f"{self.spec.key}:supervisor")
        await self._first_attempt.wait()

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                attempt += 1
                started = await self._attempt(attempt)
                self._first_attempt.set()
                if started:
                    attempt = 0
                    await self._crashed.wait()
                    self._crashed.clear()
                    self._restarts += 1
                    await self._stop_component()
                    self._set(ComponentState.RETRYING)
                    attempt = 1
                elif self._state is ComponentState.FAILED:
                    return
                await asyncio.sleep(backoff(attempt))
        finally:
            self._first_attempt.set()

    async def _attempt(self, attempt: int) -> bool:
        self._set(ComponentState.STARTING)
        component = self._factory(self.spec.name, self.spec.settings)
        self._component = component
        try:
            await component.start(self._make_context(self))
        except PermanentStartError as err:
            self._set(ComponentState.FAILED, str(err))
            self._on_error(self.spec.name)
            self.log.error("component.failed", error=str(err), hint="fix the config and reload")
            await self._stop_component()
            return False
        except Exception as err:  # noqa: BLE001 - any other start failure may pass: retry
            self._set(ComponentState.RETRYING, f"{type(err).__name__}: {err}")
            self._on_error(self.spec.name)
            if attempt == 1:
                self.log.warning("component.start_failed", error=self._last_error, retrying=True)
            else:
                self.log.debug("component.start_failed", error=self._last_error, attempt=attempt)
            await self._stop_component()
            return False
        self._set(ComponentState.RUNNING)
        self.log.info("component.started", restarts=self._restarts)
        return True

    async def _stop_component(self) -> None:
        component, self._component = self._component, None
        if component is not None:
            try:
                async with asyncio.timeout(self._stop_timeout):  # wait_for can lose a cancel
                    await component.stop()
            except Exception as err:  # noqa: BLE001 - a failing stop must not stop the others
                self.log.warning("component.stop_failed", error=f"{type(err).__name__}: {err}")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel(f"{self.spec.key} is stopping")
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._stop_timeout)
            for task in pending:
                self.log.warning("component.task_did_not_stop", task=task.get_name())

    async def stop(self) -> None:
        self._set(ComponentState.STOPPING)
        if self._runner is not None:
            self._runner.cancel(f"{self.spec.key} is stopping")
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        await self._stop_component()
        self._set(ComponentState.STOPPED)
        self.log.info("component.stopped")

    def health(self) -> Health:
        if self._component is not None and self._state is ComponentState.RUNNING:
            inner = self._component.health()
            counters = {**inner.counters, "restarts": self._restarts}
            # Running again after a crash: the crash stays visible until it has its own error.
            return Health(inner.state, inner.since, inner.last_error or self._last_error, counters)
        return Health(self._state, self._since, self._last_error, {"restarts": self._restarts})
