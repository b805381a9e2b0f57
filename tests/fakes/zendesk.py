"""A faithful local Zendesk Support API (reference §5) for the Zendesk backend's tests.

The base URL stands in for https://{sub}.zendesk.com; every route lives under /api/v2. What it
keeps faithful is what makes delivery hard: the Idempotency-Key of ticket create (a replay says
`x-idempotency-lookup: hit`, a changed body is refused, keys expire on `fake.clock`), external ids
that are NOT unique on tickets but are on users, comment authorship (`author_id`, `public`), the
audit `metadata.custom` marker, 429 with Retry-After, and errors in Zendesk's shape. Agent replies
come back through signed webhooks (zendesk_hooks.py). Routes: zendesk_routes.py (tickets,
uploads) and zendesk_users.py (users, identities, webhook secrets).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import html
import itertools
import math
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from tests.fakes.harness import FakeService, Status
from tests.fakes.zendesk_hooks import (
    DEFAULT_TRIGGER_BODY,
    Attempt,
    Emitter,
    SignatureOrder,
    Webhook,
    iso,
)

STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("urgent", "high", "normal", "low")
TYPES = ("problem", "incident", "question", "task")
Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER_ID = web.RequestKey("zendesk_user_id", object)  # the caller's id, None when anonymous
RATE = web.RequestKey("zendesk_rate", object)  # (limit, remaining, reset) of this request


class ZendeskError(Exception):
    """An answer in Zendesk's error shape, raised from deep inside a handler."""

    def __init__(self, status: int, body: Json | str, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}

    def response(self) -> web.Response:
        if isinstance(self.body, str):  # API-level problems come back as text/plain (§5.1)
            return web.Response(status=self.status, text=self.body, headers=self.headers)
        return web.json_response(self.body, status=self.status, headers=self.headers)


def invalid(field: str, description: str, error: str = "InvalidValue") -> ZendeskError:
    """422 RecordInvalid with one field's details (§5.6 ◐ shape)."""
    return ZendeskError(
        422,
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field: [{"description": description, "error": error}]},
        },
    )


def not_found() -> ZendeskError:
    return ZendeskError(404, {"error": "RecordNotFound", "description": "Not found"})


def too_many(retry_after: float | None, limit: int = 0) -> tuple[Json, dict[str, str]]:
    """The 429 body and headers (§5.4; the body's wording is ◐)."""
    headers = {"X-Rate-Limit": str(limit), "X-Rate-Limit-Remaining": "0"}
    if retry_after is not None:
        headers["Retry-After"] = str(math.ceil(retry_after))
    body = {
        "error": "APIRateLimitExceeded",
        "description": "Number of allowed API requests per minute exceeded",
    }
    return body, headers


@dataclass
class IdempotentEntry:
    fingerprint: bytes
    expires: float
    status: int = 0  # 0 while the first request is still in flight
    body: bytes = b""
    headers: dict[str, str] | None = None


class FakeZendesk(FakeService):
    """One Zendesk account: an API user (admin), a default agent, tickets, users, webhooks."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        email: str = "helpline@example.com",
        api_token: str = "zd-api-token-0123456789",
        oauth_token: str | None = None,
        account_id: int = 4242,
        rate_limit: int | None = 700,  # req/min, Enterprise plan (§5.4)
        ticket_update_limit: tuple[int, float] | None = (30, 600.0),  # per user+ticket (◐ §5.4)
        idempotency_ttl: float = 7200.0,  # about 2 h (◐ §5.3); tests shorten it
        upload_ttl: float = 3600.0,  # upload tokens expire after 60 min (help-center article)
        create_delay: float = 0.0,  # hold a create in flight, to meet a concurrent same-key one
        user_search_lag: float = 0.0,  # seconds before users/search?query= sees a user (◐)
        signature_order: SignatureOrder = "timestamp+body",  # ◐ §5.7 / §11.1
        webhook_time_scale: float = 1.0,  # multiplies the retry schedule, so tests are fast
        webhook_timeout: float = 12.0,  # ~10-12 s (◐ §5.7)
        webhook_retries: int = 3,
    ) -> None:
        super().__init__(**({"clock": clock} if clock else {}))
        self.api_email = email
        self.api_token = api_token
        self.oauth_token = oauth_token
        self.account_id = account_id
        self.rate_limit = rate_limit
        self.ticket_update_limit = ticket_update_limit
        self.idempotency_ttl = idempotency_ttl
        self.upload_ttl = upload_ttl
        self.create_delay = create_delay
        self.user_search_lag = user_search_lag
        self.signature_order: SignatureOrder = signature_order
        self._tickets: dict[int, Json] = {}
        self._comments: dict[int, list[Json]] = {}
        self._audits: dict[int, list[Json]] = {}
        self._users: dict[int, Json] = {}
        self._identities: dict[int, list[Json]] = {}
        self._tokens: dict[str, int] = {}  # api token -> agent id
        self._uploads: dict[str, tuple[float, list[Json]]] = {}
        self._blobs: dict[int, bytes] = {}  # attachment id -> content
        self._jobs: dict[str, Json] = {}
        self._idempotency: dict[str, IdempotentEntry] = {}
        self._minute: tuple[int, int] = (0, 0)  # (window, count)
        self._updates: dict[tuple[int, int], list[float]] = {}
        self._ticket_ids = itertools.count(1)
        self._user_ids = itertools.count(9001)
        self._event_ids = itertools.count(50001)  # audits, comments, events, attachments
        self._misc_ids = itertools.count(1)
        self.hooks = Emitter(
            clock=self.clock,
            lock=self.lock,
            submit=self._submit,
            account_id=account_id,
            time_scale=webhook_time_scale,
            timeout=webhook_timeout,
            retries=webhook_retries,
        )
        self.me = self.add_user("Helpline API", email, role="admin", token=api_token)
        self.agent = self.add_user("Agent Smith", "agent@example.com", role="agent")

    def __enter__(self) -> FakeZendesk:  # typed for this class, so tests see its accessors
        self.start()
        return self

    def routes(self, app: web.Application) -> None:
        from tests.fakes.zendesk_routes import add_routes

        app.middlewares.append(self._gate)
        app.on_response_prepare.append(_rate_headers)
        add_routes(self, app)

    def _submit(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None, "the fake is not running"
        asyncio.run_coroutine_threadsafe(coro, self._loop)

    # -- gate: auth and the account-wide rate limit --------------------------
    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/v2/"):
            return await handler(request)
        try:
            request[USER_ID] = self._authenticate(request)
            request[RATE] = self._count_request()
            return await handler(request)
        except ZendeskError as err:
            return err.response()
        except web.HTTPNotFound:  # an unknown endpoint, in Zendesk's words (◐)
            return web.json_response(
                {"error": "InvalidEndpoint", "description": "Not found"}, status=404
            )

    def _authenticate(self, request: web.Request) -> int | None:
        header = request.headers.get("Authorization", "")
        refused = ZendeskError(
            401, {"error": "Couldn't authenticate you"}, {"WWW-Authenticate": 'Basic realm="Web"'}
        )
        if not header:
            if request.path.rstrip("/") in ("/api/v2/users/me", "/api/v2/users/me.json"):
                return None  # anonymous `me` (id null) rather than 401 (◐)
            raise refused
        kind, _, value = header.partition(" ")
        with self.lock:
            if kind.lower() == "bearer" and self.oauth_token and value == self.oauth_token:
                return int(self.me["id"])
            if kind.lower() != "basic":
                raise refused
            try:
                user, _, secret = base64.b64decode(value).decode().partition(":")
            except ValueError:
                raise refused from None
            email, slash, tail = user.partition("/")
            agent = self._tokens.get(secret) if slash and tail == "token" else None
            if agent is None or self._users[agent]["email"].lower() != email.lower():
                raise refused
            return agent

    def _count_request(self) -> tuple[int, int, float] | None:
        if self.rate_limit is None:
            return None
        now = self.clock()
        window = int(now // 60)
        with self.lock:
            count = self._minute[1] + 1 if self._minute[0] == window else 1
            self._minute = (window, count)
        reset = 60 - now % 60
        if count > self.rate_limit:
            body, headers = too_many(reset, self.rate_limit)
            raise ZendeskError(429, body, headers)
        return self.rate_limit, self.rate_limit - count, reset

    def throttle(self, n_requests: int = 1, retry_after: float | None = 10.0) -> None:
        """The next n requests answer 429 in Zendesk's shape, before doing anything."""
        body, headers = too_many(retry_after, self.rate_limit or 0)
        self.arm(Status(429, body, headers), path="^/api/v2/", times=n_requests)

    def check_update_limit(self, user_id: int, ticket_id: int) -> None:
        """Update Ticket: 30 updates per 10 min per user per ticket (◐ §5.4)."""
        if self.ticket_update_limit is None:
            return
        limit, span = self.ticket_update_limit
        now = self.clock()
        with self.lock:
            recent = [t for t in self._updates.get((user_id, ticket_id), []) if t > now - span]
            if len(recent) >= limit:
                body, headers = too_many(recent[0] + span - now, limit)
                raise ZendeskError(429, body, headers)
            self._updates[(user_id, ticket_id)] = [*recent, now]

    # -- ids and stamps ---------------------------------------------------------
    def now(self) -> str:
        return iso(self.clock())

    def next_ticket_id(self) -> int:
        return next(self._ticket_ids)

    def next_event_id(self) -> int:
        return next(self._event_ids)

    def next_misc_id(self) -> int:
        return next(self._misc_ids)

    # -- users ----------------------------------------------------------------------
    def add_user(
        self,
        name: str,
        email: str | None = None,
        *,
        role: Literal["end-user", "agent", "admin"] = "end-user",
        external_id: str | None = None,
        phone: str | None = None,
        token: str | None = None,
    ) -> Json:
        """Create a user directly (agents for `agent_reply`, or a pre-existing customer)."""
        with self.lock:
            uid = next(self._user_ids)
            stamp = self.now()
            user: Json = {
                "id": uid,
                "url": f"{self.url}/api/v2/users/{uid}.json",
                "name": name,
                "email": email,
                "external_id": external_id,
                "phone": phone,
                "role": role,
                "active": True,
                "verified": False,
                "locale_id": 1,
                "created_at": stamp,
                "updated_at": stamp,
                "_indexed_at": self.clock() + self.user_search_lag,
            }
            self._users[uid] = user
            self._identities[uid] = []
            if email:
                self.add_identity(uid, "email", email)
            if phone:
                self.add_identity(uid, "phone_number", phone)
            if token:
                self._tokens[token] = uid
            return public(user)

    def add_identity(self, user_id: int, kind: str, value: str) -> Json:
        with self.lock:
            identities = self._identities[user_id]
            iid = self.next_misc_id()
            identity = {
                "id": iid,
                "url": f"{self.url}/api/v2/users/{user_id}/identities/{iid}.json",
                "user_id": user_id,
                "type": kind,
                "value": value,
                "primary": not any(i["type"] == kind for i in identities),
                "verified": False,
                "created_at": self.now(),
                "updated_at": self.now(),
            }
            identities.append(identity)
            return dict(identity)

    def find_user(self, *, email: str | None = None, external_id: str | None = None) -> Json | None:
        """The live user owning an email identity or an external id (case-insensitive)."""
        with self.lock:
            for user in self._users.values():
                if not user["active"]:
                    continue
                if external_id and (user["external_id"] or "").lower() == external_id.lower():
                    return user
                if email and any(
                    i["type"] == "email" and i["value"].lower() == email.lower()
                    for i in self._identities[user["id"]]
                ):
                    return user
        return None

    # -- accessors for assertions (copies, taken under the lock) -------------------
    def tickets(self, external_id: str | None = None) -> list[Json]:
        with self.lock:
            return [
                copy.deepcopy(t)
                for t in self._tickets.values()
                if external_id is None or t["external_id"] == external_id
            ]

    def ticket(self, ticket_id: int) -> Json:
        with self.lock:
            return copy.deepcopy(self._tickets[ticket_id])

    def comments(self, ticket_id: int) -> list[Json]:
        """A ticket's comments, oldest first, with author_id, public and attachments."""
        with self.lock:
            return copy.deepcopy(self._comments.get(ticket_id, []))

    def audits(self, ticket_id: int) -> list[Json]:
        with self.lock:
            return copy.deepcopy(self._audits.get(ticket_id, []))

    def users(self) -> list[Json]:
        with self.lock:
            return [public(u) for u in self._users.values()]

    def user(self, user_id: int) -> Json:
        with self.lock:
            return public(self._users[user_id])

    def identities(self, user_id: int) -> list[Json]:
        with self.lock:
            return copy.deepcopy(self._identities[user_id])

    def attachment_content(self, attachment_id: int) -> bytes:
        with self.lock:
            return self._blobs[attachment_id]

    def set_status(self, ticket_id: int, status: str) -> None:
        """Move a ticket as Zendesk's own automations do (e.g. closed 4 days after solved)."""
        with self.lock:
            self._tickets[ticket_id]["status"] = status
            self._tickets[ticket_id]["updated_at"] = self.now()

    # -- uploads and comments (shared by routes and agent_reply) ------------------------
    def store_upload(
        self, filename: str, content_type: str, data: bytes, token: str | None = None
    ) -> tuple[str, Json]:
        """Keep an uploaded file under a token (new, or an existing one to add to)."""
        with self.lock:
            aid = self.next_event_id()
            name = f"tok{aid:x}{len(self._uploads):04d}"
            attachment = {
                "id": aid,
                "url": f"{self.url}/api/v2/attachments/{aid}.json",
                "file_name": filename,
                "content_url": f"{self.url}/attachments/token/{name}/?name={filename}",
                "content_type": content_type,
                "size": len(data),
                "inline": False,
                "deleted": False,
                "thumbnails": [],
            }
            self._blobs[aid] = data
            if token is None or token not in self._uploads:
                token = name
                self._uploads[token] = (self.clock() + self.upload_ttl, [])
            self._uploads[token][1].append(attachment)
            return token, dict(attachment)

    def blob_by_path(self, name: str) -> tuple[Json, bytes] | None:
        with self.lock:
            for _, attachments in self._uploads.values():
                for a in attachments:
                    if f"/token/{name}/" in a["content_url"]:
                        return a, self._blobs[a["id"]]
        return None

    def take_uploads(self, tokens: Iterable[str]) -> list[Json]:
        """The attachments behind upload tokens; unknown or expired tokens are skipped (◐)."""
        found: list[Json] = []
        with self.lock:
            for token in tokens:
                entry = self._uploads.get(token)
                if entry and entry[0] > self.clock():
                    found.extend(copy.deepcopy(entry[1]))
        return found

    def add_audit(
        self,
        ticket: Json,
        *,
        actor_id: int,
        comment: Json | None = None,
        changes: Iterable[tuple[str, Any, Any]] = (),
        metadata: Json | None = None,
        channel: str = "api",
        change_type: str = "Change",
    ) -> tuple[Json | None, Json]:
        """Record one update as an audit; a comment in it takes its event id. `comment` holds
        author_id, body, html_body, public and attachments. Returns (comment, audit) copies."""
        with self.lock:
            audit_id = self.next_event_id()
            stamp = self.now()
            via = {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}}
            events: list[Json] = []
            stored = None
            if comment is not None:
                markup = comment.get("html_body")
                plain = comment.get("body") or (_plain(markup) if markup else "")
                stored = {
                    "id": self.next_event_id(),
                    "type": "Comment",
                    "author_id": comment["author_id"],
                    "body": plain,
                    "html_body": markup or _html(plain),
                    "plain_body": plain,
                    "public": comment.get("public", True),
                    "attachments": comment.get("attachments", []),
                    "audit_id": audit_id,
                    "via": via,
                    "created_at": stamp,
                    "metadata": {"system": {"client": "helpline"}, "custom": metadata or {}},
                }
                events.append({k: v for k, v in stored.items() if k != "metadata"})
                self._comments.setdefault(ticket["id"], []).append(stored)
                if stored["public"]:  # "true if any comments are public"
                    ticket["is_public"] = True
            for name, old, new in changes:
                event = {"id": self.next_event_id(), "type": change_type, "field_name": name}
                event["value"] = new
                if change_type == "Change":
                    event["previous_value"] = old
                events.append(event)
            audit = {
                "id": audit_id,
                "ticket_id": ticket["id"],
                "created_at": stamp,
                "author_id": actor_id,
                "metadata": {
                    "system": {"client": "helpline", "ip_address": "127.0.0.1"},
                    "custom": metadata or {},
                },
                "via": via,
                "events": events,
            }
            self._audits.setdefault(ticket["id"], []).append(audit)
            ticket["updated_at"] = stamp
            return copy.deepcopy(stored), copy.deepcopy(audit)

    # -- agent replies and webhooks -------------------------------------------------------
    def set_webhook(
        self,
        url: str,
        *,
        secret: str = "zd-webhook-signing-secret",
        mode: Literal["trigger", "event"] = "trigger",
        body_template: str = DEFAULT_TRIGGER_BODY,
        only_public: bool = True,
        include_api_writes: bool = True,
        signature_order: SignatureOrder | None = None,
    ) -> Webhook:
        """Connect a webhook. A trigger fires on every comment by default, helpline's own API
        writes included: "current user is agent" is the API user there (§2.4)."""
        hook = Webhook(
            id=f"01HLPWH{self.next_misc_id():019d}",
            url=url,
            secret=secret,
            mode=mode,
            body_template=body_template,
            only_public=only_public,
            include_api_writes=include_api_writes,
            signature_order=signature_order or self.signature_order,
        )
        self.hooks.add(hook)
        return hook

    def agent_reply(
        self,
        ticket_id: int,
        text: str,
        *,
        public: bool = True,
        attachments: Iterable[tuple[str, str, bytes]] = (),
        author: Json | int | None = None,
        status: str | None = None,
    ) -> Json:
        """An agent writes in the Zendesk UI: the comment lands, then the webhooks fire."""
        author_id = author if isinstance(author, int) else (author or self.agent)["id"]
        files = [self.store_upload(n, ct, data)[1] for n, ct, data in attachments]
        with self.lock:
            ticket = self._tickets[ticket_id]
            changes = []
            if status and status != ticket["status"]:
                changes.append(("status", ticket["status"], status))
                ticket["status"] = status
            comment, _ = self.add_audit(
                ticket,
                actor_id=author_id,
                comment={
                    "author_id": author_id,
                    "body": text,
                    "public": public,
                    "attachments": files,
                },
                changes=changes,
                channel="web",
            )
            assert comment is not None
            snapshot = copy.deepcopy(ticket)
            author_user = self.user(author_id)
        self.hooks.on_comment(snapshot, comment, author_user, actor_id=author_id, via_api=False)
        return comment

    def deliveries(self) -> list[Attempt]:
        """Every webhook attempt so far, in order (status 0 = no answer)."""
        with self.lock:
            return list(self.hooks.attempts)

    async def wait_deliveries(self, n: int, timeout: float = 5.0) -> list[Attempt]:
        """Wait (bounded) until at least n attempts are logged; safe in the receiver's loop."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.deliveries()) < n:
            assert asyncio.get_running_loop().time() < deadline, "webhook attempts not seen"
            await asyncio.sleep(0.01)
        return self.deliveries()

    def duplicate_next(self, invocations: int = 1) -> None:
        """The next invocations are sent twice, as separate invocations (§5.7 "more than once")."""
        with self.lock:
            self.hooks.duplicates += invocations

    def replay(self, invocation_id: str, *, fresh_timestamp: bool = False) -> None:
        self.hooks.replay(invocation_id, fresh_timestamp=fresh_timestamp)

    def send_forged(
        self, hook: Webhook, body: bytes, *, bad_signature: bool = False, age: float = 0.0
    ) -> str:
        return self.hooks.forge(hook, body, bad_signature=bad_signature, age=age)


def public(user: Json) -> Json:
    """A user as the API shows it (without the fake's private keys)."""
    return {k: copy.deepcopy(v) for k, v in user.items() if not k.startswith("_")}


def _html(text: str) -> str:
    paragraphs = html.escape(text).replace("\n", "<br>")
    return f'<div class="zd-comment" dir="auto"><p>{paragraphs}</p></div>'


def _plain(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<br\s*/?>", "\n", markup))).strip()


async def _rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every counted answer carries the plan's headers (§5.4)."""
    counted = request.get(RATE)
    if isinstance(counted, tuple) and "X-Rate-Limit" not in response.headers:
        limit, remaining, reset = counted
        response.headers["X-Rate-Limit"] = str(limit)
        response.headers["X-Rate-Limit-Remaining"] = str(max(remaining, 0))
        response.headers["ratelimit-limit"] = str(limit)
        response.headers["ratelimit-remaining"] = str(max(remaining, 0))
        response.headers["ratelimit-reset"] = str(math.ceil(reset))
