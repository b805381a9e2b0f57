"""Zammad's Trigger → Webhook, as the fake emits it: signed with HMAC-SHA1, retried by ActiveJob.

Reference §4.6 (ZM-SRC trigger_webhook_job.rb, lib/user_agent.rb): POST of the compact JSON
`{"ticket": {...}, "article": {...}}` with `User-Agent: Zammad User Agent`, `X-Zammad-Trigger`,
`X-Zammad-Delivery` (the job id, the same on each retry) and, when the webhook has a token,
`X-Hub-Signature: sha1=<hex HMAC-SHA1(token, raw body)>`. A non-2xx answer (redirects are not
followed, so 3xx too) or a network error is retried: 5 attempts, wait = attempt * 10 s, scaled
down here by `time_scale`. Zammad's scheme has no timestamp, so there is no "old timestamp" case.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

USER_AGENT = "Zammad User Agent"
ATTEMPTS = 5  # retry_on ... attempts: 5
WAIT_STEP = 10.0  # wait = executions * 10 s


def sign(token: str, body: bytes) -> str:
    """The `X-Hub-Signature` value: `sha1=` + hex HMAC-SHA1 keyed by the token over the raw body."""
    return "sha1=" + hmac.new(token.encode(), body, hashlib.sha1).hexdigest()


def encode(payload: Any) -> bytes:
    """Compact JSON like Rails' `to_json`, which escapes <, > and & (escape_html_entities_in_json).

    ◐ the escaping is Rails' default, not checked on a live Zammad; it makes a receiver that
    re-serialises the body before verifying fail, as it would on any real payload."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


@dataclass
class Webhook:
    """One webhook plus the trigger that fires it (conditions as in §4.6)."""

    url: str
    token: str | None
    trigger: str = "helpline agent reply"
    method: str = "POST"
    sender: str | None = "Agent"  # Article sender is ...; None = any
    public_only: bool = True  # Article visibility is public
    attribute_set: bool = True  # Ticket <helpline attribute> is set
    on_create: bool = False  # Action is updated (not created)


@dataclass
class Delivery:
    """One attempt: `status` is the receiver's HTTP status, 0 for a network error or timeout."""

    delivery_id: str
    attempt: int
    status: int
    headers: dict[str, str]
    body: bytes
    at: float
    error: str | None = None
    tamper: str | None = None


@dataclass
class _Job:
    delivery_id: str
    webhook: Webhook
    body: bytes
    futures: list[concurrent.futures.Future[Any]] = field(default_factory=list)


class ZammadHooks:
    """Mixin for FakeZammad: trigger evaluation, delivery with retries, the delivery log."""

    lock: threading.RLock
    clock: Callable[[], float]
    _loop: asyncio.AbstractEventLoop | None
    time_scale: float
    webhook_timeout: float

    def _init_hooks(self) -> None:
        self._webhook: Webhook | None = None
        self._jobs: dict[str, _Job] = {}
        self._deliveries: list[Delivery] = []
        self._job_seq = 0

    # -- to provide (FakeZammad) -------------------------------------------
    def _webhook_payload(self, ticket_id: int, article_id: int) -> dict[str, Any]:
        raise NotImplementedError

    def _trigger_matches(self, hook: Webhook, ticket_id: int, article_id: int) -> bool:
        raise NotImplementedError

    # -- configuration -----------------------------------------------------
    def set_webhook(
        self,
        url: str,
        *,
        token: str | None = None,
        trigger: str = "helpline agent reply",
        method: str = "POST",
        sender: str | None = "Agent",
        public_only: bool = True,
        attribute_set: bool = True,
        on_create: bool = False,
    ) -> None:
        """Configure the webhook (HMAC SHA1 Signature Token = `token`) and its trigger."""
        with self.lock:
            self._webhook = Webhook(
                url, token, trigger, method, sender, public_only, attribute_set, on_create
            )

    def clear_webhook(self) -> None:
        with self.lock:
            self._webhook = None

    # -- observation -------------------------------------------------------
    def deliveries(self, delivery_id: str | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self._deliveries if delivery_id in (None, d.delivery_id)]

    async def wait_for_deliveries(
        self, count: int, *, ok: bool = False, timeout: float = 5.0
    ) -> list[Delivery]:
        """Wait (bounded) for `count` logged attempts (2xx ones if `ok`); usable on any loop."""
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.deliveries() if not ok or 200 <= d.status < 300]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} webhook deliveries after {timeout} s")
            await asyncio.sleep(0.01)

    def pending_deliveries(self) -> int:
        with self.lock:
            return sum(1 for job in self._jobs.values() for f in job.futures if not f.done())

    # -- emission ----------------------------------------------------------
    def _fire(self, ticket_id: int, article_id: int, *, created: bool) -> str | None:
        """Called after a commit: queue the job when the trigger's conditions hold."""
        with self.lock:
            hook = self._webhook
            if hook is None or (created and not hook.on_create):
                return None
            if not self._trigger_matches(hook, ticket_id, article_id):
                return None
            return self._queue(hook, encode(self._webhook_payload(ticket_id, article_id)))

    def emit(self, ticket_id: int, article_id: int) -> str:
        """Queue the webhook for an article now, whatever the trigger's conditions say."""
        with self.lock:
            assert self._webhook is not None, "set_webhook first"
            return self._queue(self._webhook, encode(self._webhook_payload(ticket_id, article_id)))

    def _queue(self, hook: Webhook, body: bytes, tamper: str | None = None) -> str:
        self._job_seq += 1
        delivery_id = str(uuid.UUID(int=0x2A << 96 | self._job_seq))  # a job id, deterministic
        job = _Job(delivery_id, hook, body)
        self._jobs[delivery_id] = job
        self._schedule(job, retries=True, tamper=tamper)
        return delivery_id

    def _schedule(self, job: _Job, *, retries: bool, tamper: str | None) -> None:
        assert self._loop is not None, "the fake is not running"
        future = asyncio.run_coroutine_threadsafe(self._run_job(job, retries, tamper), self._loop)
        job.futures.append(future)

    async def replay(self, delivery_id: str, *, tamper: str | None = None) -> Delivery:
        """Send the very same delivery once more (same id, body, signature); awaitable on any loop.

        `tamper="signature"` sends a wrong `sha1=` value, `"unsigned"` none (negative tests)."""
        with self.lock:
            job = self._jobs[delivery_id]
        assert self._loop is not None, "the fake is not running"
        future = asyncio.run_coroutine_threadsafe(self._attempt(job, 0, tamper), self._loop)
        return await asyncio.wrap_future(future)

    def emit_tampered(self, ticket_id: int, article_id: int, tamper: str = "signature") -> str:
        """A fresh delivery (new id) with a bad signature (`signature`) or none (`unsigned`)."""
        with self.lock:
            assert self._webhook is not None, "set_webhook first"
            body = encode(self._webhook_payload(ticket_id, article_id))
            self._job_seq += 1
            delivery_id = str(uuid.UUID(int=0x2A << 96 | self._job_seq))
            job = _Job(delivery_id, self._webhook, body)
            self._jobs[delivery_id] = job
            self._schedule(job, retries=False, tamper=tamper)
            return delivery_id

    async def _run_job(self, job: _Job, retries: bool, tamper: str | None) -> None:
        for attempt in range(1, (ATTEMPTS if retries else 1) + 1):
            result = await self._attempt(job, attempt, tamper)
            if 200 <= result.status < 300:
                return
            if attempt < ATTEMPTS and retries:
                await asyncio.sleep(attempt * WAIT_STEP * self.time_scale)

    def _headers(self, job: _Job, tamper: str | None) -> dict[str, str]:
        headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json; charset=utf-8",
            "X-Zammad-Trigger": job.webhook.trigger,
            "X-Zammad-Delivery": job.delivery_id,
        }
        if tamper == "signature":
            headers["X-Hub-Signature"] = sign("not-the-token", job.body)
        elif job.webhook.token and tamper != "unsigned":
            headers["X-Hub-Signature"] = sign(job.webhook.token, job.body)
        return headers

    async def _attempt(self, job: _Job, attempt: int, tamper: str | None) -> Delivery:
        headers = self._headers(job, tamper)
        # Zammad: open 4 s, read 30 s, total 60 s; here one total bound (webhook_timeout).
        limit = aiohttp.ClientTimeout(
            total=self.webhook_timeout, sock_connect=min(4.0, self.webhook_timeout)
        )
        status, error = 0, None
        try:
            async with (
                aiohttp.ClientSession(timeout=limit) as http,
                http.request(
                    job.webhook.method,
                    job.webhook.url,
                    data=job.body,
                    headers=headers,
                    allow_redirects=False,
                ) as response,
            ):
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as err:
            error = f"{type(err).__name__}: {err}"
        delivery = Delivery(
            job.delivery_id, attempt, status, headers, job.body, self.clock(), error, tamper
        )
        with self.lock:
            self._deliveries.append(delivery)
        return delivery

    def _cancel_deliveries(self) -> None:
        with self.lock:
            for job in self._jobs.values():
                for future in job.futures:
                    future.cancel()
