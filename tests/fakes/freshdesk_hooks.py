"""Freshdesk automation webhooks as the fake emits them (backends.md §6.8).

Freshdesk signs nothing. An admin builds the request in an automation rule ("Reply is sent",
performed by an agent → action "Trigger webhook"): URL, method, custom headers, optional
Basic auth (username/password, or an API key), JSON content that is either "simple" (chosen
ticket fields, sent as `{"freshdesk_webhook": {"ticket_id": …, "ticket_cf_…": …}}` ◐ seen in
community receivers) or "advanced" (the admin's own JSON template with `{{ticket.id}}`-style
placeholders). So a receiver authenticates with a secret custom header and/or Basic auth, and
treats the body as a nudge to re-read the ticket's conversations.

No delivery id: Freshdesk documents none, so the fake sends none (a receiver must dedupe on
ticket id + conversation id it re-reads). The fake numbers deliveries for its own log only.

Failures (non-2xx, 3xx not followed ◐, timeout, connection error) are retried at +5 min,
+30 min, +60 min (FD-KB "Receiving webhook failure emails"), then an admin failure email is
logged. Webhook calls beyond the account's budget are deferred to the next hour and dropped
after 24 h (FD-KB "Handling and preventing webhook drops"). All these durations are
multiplied by `time_scale` so tests run in well under a second.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

RETRY_SCHEDULE = (300.0, 1800.0, 3600.0)  # seconds after the previous failure
HOUR, DAY = 3600.0, 86400.0
DEFAULT_SIMPLE = (
    "ticket.id",
    "ticket.subject",
    "ticket.status",
    "ticket.url",
    "ticket.cf_helpline_cid",
    "ticket.latest_public_comment",
    "ticket.contact.email",
    "ticket.contact.unique_external_id",
)
PLACEHOLDER = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


@dataclass
class Hook:
    """One automation rule's "Trigger webhook" action, as the admin filled it in."""

    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    basic_auth: tuple[str, str] | None = None
    template: str | None = None  # advanced content; None → simple content
    simple_fields: tuple[str, ...] = DEFAULT_SIMPLE
    on_notes: bool = False  # also fire for notes (a second rule "Note is added")
    condition: Callable[[dict[str, Any]], bool] | None = None  # on the ticket dict


@dataclass
class Attempt:
    at: float  # fake clock
    status: int | None  # None: timeout or connection error
    error: str | None = None


@dataclass
class Delivery:
    """One webhook call and its attempts; `number` is the fake's, never sent."""

    number: int
    ticket_id: int
    conversation_id: int
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    state: str = "pending"  # pending | delivered | failed | dropped | deferred
    attempts: list[Attempt] = field(default_factory=list)
    kind: str = "event"  # event | replay | forged
    replay_of: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)


def render(hook: Hook, values: dict[str, Any]) -> bytes:
    """The request body: the admin's template with placeholders filled, or simple content."""
    if hook.template is None:
        simple = {name.replace(".", "_"): values.get(name) for name in hook.simple_fields}
        return json.dumps({"freshdesk_webhook": simple}).encode()

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(1), "")  # unknown placeholder → empty ◐
        if isinstance(value, bool | int | float):
            return json.dumps(value)
        return json.dumps(str(value))[1:-1]  # escaped to sit inside the template's quotes ◐

    return PLACEHOLDER.sub(fill, hook.template).encode()


def headers_for(hook: Hook) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **hook.headers}
    if hook.basic_auth is not None:
        user, password = hook.basic_auth
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


class Emitter:
    """Sends, retries and logs the webhook calls of one fake, on the fake's own loop."""

    def __init__(
        self,
        *,
        lock: Any,
        clock: Callable[[], float],
        loop: Callable[[], asyncio.AbstractEventLoop | None],
        consume: Callable[[], object],
        time_scale: float,
        timeout: float,
        budget: int | None,
    ) -> None:
        self.lock = lock
        self.clock = clock
        self.loop = loop
        self.consume = consume  # a webhook call counts against the API rate limit
        self.time_scale = time_scale
        self.timeout = timeout
        self.budget = budget  # webhook calls per hour; None: unlimited
        self.hook: Hook | None = None
        self.deliveries: list[Delivery] = []
        self.failure_emails: list[dict[str, Any]] = []
        self._window = (0.0, 0)  # (start, calls) of the current budget hour, monotonic
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, ticket: dict[str, Any], conversation_id: int, values: dict[str, Any]) -> None:
        """Queue a call for an event, rendered now as the rule runs (call under the lock)."""
        hook = self.hook
        if hook is None or (hook.condition is not None and not hook.condition(ticket)):
            return
        delivery = Delivery(
            len(self.deliveries) + 1,
            int(ticket["id"]),
            conversation_id,
            hook.method,
            hook.url,
            headers_for(hook),
            render(hook, values),
        )
        self.deliveries.append(delivery)
        self._spawn(self._deliver(delivery))

    def _spawn(self, coro: Any) -> None:
        loop = self.loop()
        if loop is None:
            coro.close()
            return

        def start() -> None:
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(start)

    async def _deliver(self, delivery: Delivery) -> None:
        created = time.monotonic()
        retries = list(RETRY_SCHEDULE)
        while True:
            wait = self._budget_wait()
            if wait > 0:
                if time.monotonic() + wait - created > DAY * self.time_scale:
                    self._give_up(delivery, "dropped", "hourly webhook limit exceeded for 24 h")
                    return
                with self.lock:
                    delivery.state = "deferred"
                await asyncio.sleep(wait)
                continue
            attempt = await self._send(delivery.method, delivery.url, delivery.headers, delivery)
            if attempt.status is not None and 200 <= attempt.status < 300:
                with self.lock:
                    delivery.state = "delivered"
                return
            if not retries:
                self._give_up(delivery, "failed", attempt.error or f"HTTP {attempt.status}")
                return
            with self.lock:
                delivery.state = "pending"
            await asyncio.sleep(retries.pop(0) * self.time_scale)

    def _budget_wait(self) -> float:
        """0 if a call may go now (and count it), else seconds until the next hour."""
        if self.budget is None:
            return 0.0
        hour = HOUR * self.time_scale
        now = time.monotonic()
        with self.lock:
            start, calls = self._window
            if now - start >= hour:
                start, calls = now, 0
            if calls >= self.budget:
                self._window = (start, calls)
                return start + hour - now + 0.001
            self._window = (start, calls + 1)
        return 0.0

    def _give_up(self, delivery: Delivery, state: str, reason: str) -> None:
        with self.lock:
            delivery.state = state
            self.failure_emails.append(
                {"delivery": delivery.number, "url": delivery.url, "reason": reason}
            )

    async def _send(
        self, method: str, url: str, headers: dict[str, str], delivery: Delivery
    ) -> Attempt:
        self.consume()
        at = self.clock()
        limit = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=limit) as http,
                http.request(
                    method, url, data=delivery.body, headers=headers, allow_redirects=False
                ) as response,
            ):
                await response.read()
                attempt = Attempt(at, response.status)
        except TimeoutError:
            attempt = Attempt(at, None, "timeout")
        except (aiohttp.ClientError, OSError) as err:
            attempt = Attempt(at, None, f"{type(err).__name__}: {err}")
        with self.lock:
            delivery.attempts.append(attempt)
        return attempt

    async def resend(
        self,
        number: int,
        *,
        headers: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
        kind: str = "replay",
    ) -> Delivery:
        """Send delivery `number` once more, byte for byte, or altered (for negative tests)."""
        with self.lock:
            original = self.deliveries[number - 1]
            sent = {k: v for k, v in original.headers.items() if k not in drop}
            sent.update(headers or {})
            copy = dataclasses.replace(
                original,
                number=len(self.deliveries) + 1,
                headers=sent,
                attempts=[],
                kind=kind,
                replay_of=number,
            )
            self.deliveries.append(copy)
        attempt = await self._send(copy.method, copy.url, copy.headers, copy)
        with self.lock:
            ok = attempt.status is not None and 200 <= attempt.status < 300
            copy.state = "delivered" if ok else "failed"
        return copy

    async def cancel(self) -> None:
        """Stop pending retries (the fake is stopping)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return [dataclasses.replace(d, attempts=list(d.attempts)) for d in self.deliveries]

    async def until(
        self, check: Callable[[list[Delivery]], bool], timeout: float
    ) -> list[Delivery]:
        """Poll (in the caller's loop) until `check(deliveries)` holds; bounded."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.snapshot()
            if check(seen):
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"webhook deliveries not as expected: {seen!r}")
            await asyncio.sleep(0.01)
