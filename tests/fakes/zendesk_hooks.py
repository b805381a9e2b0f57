"""The webhooks a fake Zendesk sends when a comment lands on a ticket (reference §5.7).

Two connection methods exist and a webhook cannot switch between them: a trigger-connected
webhook posts a body the admin templated from placeholders, an event-subscribed one posts the
`zen:event-type:ticket.comment_added` envelope. Both are signed the same way:

    X-Zendesk-Webhook-Signature = base64(HMAC-SHA256(secret as UTF-8 bytes, TIMESTAMP + BODY))

with the timestamp (ISO-8601 UTC) in X-Zendesk-Webhook-Signature-Timestamp. The order is the one
uncertainty of the scheme (◐): the current doc says timestamp+body, an older revision and its
example vector say body+timestamp, so the emitter takes `signature_order`.

Retries are not documented in §5.7 (◐): this emitter retries timeouts, connection errors, 409,
429 and 5xx up to `retries` times on a schedule scaled by `time_scale`, honours a Retry-After
below 60 s, and keeps one invocation id across the attempts of one invocation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp

# The static secret Zendesk signs test deliveries of a not-yet-created webhook with (◐ §5.7).
TEST_SIGNING_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
# What a thin trigger body looks like (§5.7, connection method 1).
DEFAULT_TRIGGER_BODY = '{"ticket_id":"{{ticket.id}}","external_id":"{{ticket.external_id}}"}'
COMMENT_ADDED = "zen:event-type:ticket.comment_added"
RETRY_SCHEDULE = (5.0, 15.0, 45.0)  # seconds before retry 1, 2, 3 (◐ the fake's choice)

SignatureOrder = Literal["timestamp+body", "body+timestamp"]
Submit = Callable[[Coroutine[Any, Any, None]], None]


def iso(ts: float) -> str:
    """Zendesk's timestamp form: ISO-8601 UTC to the second with a Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(secret: str, timestamp: str, body: bytes, order: SignatureOrder = "timestamp+body") -> str:
    """The signature of one delivery; the key is the secret's UTF-8 bytes, never decoded."""
    stamp = timestamp.encode()
    message = stamp + body if order == "timestamp+body" else body + stamp
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@dataclass
class Webhook:
    """One configured webhook: where it posts, how it signs, and when its trigger fires."""

    id: str
    url: str
    secret: str
    mode: Literal["trigger", "event"]
    body_template: str
    only_public: bool
    include_api_writes: bool
    signature_order: SignatureOrder


@dataclass
class Attempt:
    """One HTTP attempt of one invocation; `status` 0 means no answer (timeout, reset)."""

    invocation_id: str
    attempt: int
    url: str
    headers: dict[str, str]
    body: bytes
    status: int
    error: str | None
    at: float


@dataclass
class Invocation:
    """What one trigger firing sends; kept so a test can replay it byte for byte."""

    id: str
    webhook: Webhook
    body: bytes
    attempts: list[Attempt] = field(default_factory=list)
    done: bool = False


class Emitter:
    """Builds, signs and delivers webhooks on the fake's loop; every attempt is logged."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        lock: Any,
        submit: Submit,
        account_id: int,
        time_scale: float,
        timeout: float,
        retries: int,
    ) -> None:
        self.clock = clock
        self.lock = lock
        self.submit = submit
        self.account_id = account_id
        self.time_scale = time_scale
        self.timeout = timeout
        self.retries = retries
        self.webhooks: list[Webhook] = []
        self.invocations: dict[str, Invocation] = {}
        self.attempts: list[Attempt] = []
        self.duplicates = 0  # the next N invocations are sent twice (§5.7: "more than once")
        self._ids = itertools.count(1)
        self._events = itertools.count(1)

    def add(self, webhook: Webhook) -> None:
        with self.lock:
            self.webhooks.append(webhook)

    # -- what fires ---------------------------------------------------------
    def on_comment(
        self,
        ticket: dict[str, Any],
        comment: dict[str, Any],
        author: dict[str, Any],
        *,
        actor_id: int,
        via_api: bool,
    ) -> list[str]:
        """Fire every webhook whose trigger matches a new comment; the invocation ids."""
        fired: list[str] = []
        with self.lock:
            hooks = list(self.webhooks)
        for hook in hooks:
            if hook.mode == "trigger":
                if hook.only_public and not comment["public"]:
                    continue
                if via_api and not hook.include_api_writes:
                    continue
                body = _render(hook.body_template, ticket, comment, actor_id)
            else:
                body = self._envelope(ticket, comment, author, actor_id)
            copies = 1
            with self.lock:
                if self.duplicates > 0:
                    self.duplicates -= 1
                    copies = 2
            fired.extend(self.send(hook, body) for _ in range(copies))
        return fired

    def _envelope(
        self,
        ticket: dict[str, Any],
        comment: dict[str, Any],
        author: dict[str, Any],
        actor_id: int,
    ) -> bytes:
        """The event-subscribed body (◐ envelope: ids as strings, status in capitals)."""
        detail = {
            "actor_id": str(actor_id),
            "assignee_id": _str(ticket.get("assignee_id")),
            "created_at": ticket["created_at"],
            "description": ticket["description"],
            "external_id": _str(ticket.get("external_id")),
            "id": str(ticket["id"]),
            "is_public": ticket["is_public"],
            "priority": (ticket.get("priority") or "").upper() or None,
            "requester_id": str(ticket["requester_id"]),
            "status": ticket["status"].upper(),
            "subject": ticket["subject"],
            "submitter_id": str(ticket["submitter_id"]),
            "tags": ticket["tags"],
            "type": ticket.get("type"),
            "updated_at": ticket["updated_at"],
            "via": {"channel": ticket["via"]["channel"]},
        }
        event = {
            "comment": {
                "author": {
                    "id": str(author["id"]),
                    "is_staff": author["role"] in ("agent", "admin"),
                    "name": author["name"],
                },
                "body": comment["body"],
                "id": str(comment["id"]),
                "is_public": comment["public"],
            }
        }
        envelope = {
            "account_id": self.account_id,
            "detail": detail,
            "event": event,
            "id": f"evt-{next(self._events):08d}",
            "subject": f"zen:ticket:{ticket['id']}",
            "time": iso(self.clock()),
            "type": COMMENT_ADDED,
            "zendesk_event_version": "2022-11-06",
        }
        return json.dumps(envelope, separators=(",", ":")).encode()

    # -- delivery -------------------------------------------------------------
    def send(self, hook: Webhook, body: bytes) -> str:
        """Start one invocation on the fake's loop; its id (stable across its retries)."""
        invocation = Invocation(f"inv-{next(self._ids):06d}", hook, body)
        with self.lock:
            self.invocations[invocation.id] = invocation
        self.submit(self._deliver(invocation))
        return invocation.id

    def replay(self, invocation_id: str, *, fresh_timestamp: bool = False) -> None:
        """Send an earlier attempt again: identical headers (a replay), or re-signed now."""
        with self.lock:
            invocation = self.invocations[invocation_id]
            first = invocation.attempts[0]
        headers = None if fresh_timestamp else dict(first.headers)
        self.submit(self._attempt_once(invocation, headers))

    def forge(
        self, hook: Webhook, body: bytes, *, bad_signature: bool = False, age: float = 0.0
    ) -> str:
        """One attempt the receiver must refuse: a wrong signature or an old timestamp."""
        invocation = Invocation(f"inv-{next(self._ids):06d}", hook, body)
        with self.lock:
            self.invocations[invocation.id] = invocation
        headers = self.headers(invocation, self.clock() - age)
        if bad_signature:
            headers["X-Zendesk-Webhook-Signature"] = sign("not-the-secret", "x", body)
        self.submit(self._attempt_once(invocation, headers))
        return invocation.id

    def headers(self, invocation: Invocation, at: float) -> dict[str, str]:
        hook = invocation.webhook
        stamp = iso(at)
        return {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Zendesk Webhook",
            "X-Zendesk-Account-Id": str(self.account_id),
            "X-Zendesk-Webhook-Id": hook.id,
            "X-Zendesk-Webhook-Invocation-Id": invocation.id,  # ◐ header name
            "X-Zendesk-Webhook-Signature": sign(
                hook.secret, stamp, invocation.body, hook.signature_order
            ),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        }

    async def _deliver(self, invocation: Invocation) -> None:
        for n in range(self.retries + 1):
            status, retry_after = await self._attempt(invocation, None)
            if 200 <= status < 300 or not _retryable(status) or n == self.retries:
                break
            delay = RETRY_SCHEDULE[min(n, len(RETRY_SCHEDULE) - 1)]
            if retry_after is not None and retry_after < 60:
                delay = retry_after
            await asyncio.sleep(delay * self.time_scale)
        with self.lock:
            invocation.done = True

    async def _attempt_once(self, invocation: Invocation, headers: dict[str, str] | None) -> None:
        await self._attempt(invocation, headers)
        with self.lock:
            invocation.done = True

    async def _attempt(
        self, invocation: Invocation, headers: dict[str, str] | None
    ) -> tuple[int, float | None]:
        now = self.clock()
        sent = headers if headers is not None else self.headers(invocation, now)
        with self.lock:
            number = len(invocation.attempts) + 1
        status, error, retry_after = 0, None, None
        try:
            limit = aiohttp.ClientTimeout(total=self.timeout)
            async with (
                aiohttp.ClientSession(timeout=limit) as http,
                http.post(invocation.webhook.url, data=invocation.body, headers=sent) as answer,
            ):
                status = answer.status
                retry_after = _seconds(answer.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            error = type(err).__name__
        record = Attempt(
            invocation.id, number, invocation.webhook.url, sent, invocation.body, status, error, now
        )
        with self.lock:
            invocation.attempts.append(record)
            self.attempts.append(record)
        return status, retry_after


def _retryable(status: int) -> bool:
    return status == 0 or status in (409, 429) or status >= 500


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _render(template: str, ticket: dict[str, Any], comment: dict[str, Any], actor_id: int) -> bytes:
    """Fill `{{placeholders}}` the way a JSON trigger body does (values JSON-escaped)."""
    values = {
        "ticket.id": ticket["id"],
        "ticket.external_id": ticket.get("external_id") or "",
        "ticket.status": ticket["status"],
        "ticket.subject": ticket["subject"],
        "ticket.requester.id": ticket["requester_id"],
        "ticket.latest_comment.id": comment["id"],
        "ticket.latest_comment.value": comment["body"],
        "current_user.id": actor_id,
    }

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(1).strip(), "")
        return json.dumps(str(value))[1:-1]

    return re.sub(r"\{\{([^}]+)\}\}", fill, template).encode()
