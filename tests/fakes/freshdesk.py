"""A faithful local fake of the Freshdesk API v2 (backends.md §6), for the backend's tests.

Serves `/api/v2/...` with Basic auth `{api_key}:X`, Freshdesk's codes, validation and
duplicate answers, a per-account rate limit with its headers, a synchronous ticket listing
next to an index-lagged search API, and automation webhooks (freshdesk_hooks.py). Rules
and wording live in freshdesk_model.py. ◐ marks behaviour the reference could not confirm.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from aiohttp import web

from tests.fakes.freshdesk_hooks import DEFAULT_SIMPLE, Delivery, Emitter, Hook
from tests.fakes.freshdesk_http import add_routes
from tests.fakes.freshdesk_model import (
    CONV_NOTE,
    CONV_REPLY,
    STATUSES,
    THROTTLED,
    UNAUTHORIZED,
    FdError,
    iso,
)
from tests.fakes.freshdesk_ops import API, converse, json_answer
from tests.fakes.harness import FakeService, Handler, Status

Row = dict[str, Any]


class FakeFreshdesk(FakeService):
    """Freshdesk v2 in memory. Ids are counters; timestamps come from `clock`."""

    def __init__(
        self,
        *,
        api_key: str = "fd-test-key",
        clock: Callable[[], float] = time.time,
        marker_field: str = "cf_helpline_cid",
        ticket_fields: dict[str, str] | None = None,  # cf name → text | number | checkbox
        required_fields: tuple[str, ...] = ("subject", "description"),  # admin-required ◐
        custom_statuses: Iterable[int] = (),  # custom statuses get codes above 5 ◐
        search_lag: float = 5.0,  # seconds before search sees a write; not documented ◐
        rate_limit: int = 700,  # calls per window; per plan and era ◐ (§6.7)
        rate_window: float = 60.0,  # legacy plans: per minute; newer plans: per hour ◐
        webhook_time_scale: float = 0.001,  # 5/30/60 min retries → 0.3/1.8/3.6 s
        webhook_timeout: float = 10.0,  # not documented ◐
        webhook_budget: int | None = None,  # webhook calls per (scaled) hour; None: no cap
    ) -> None:
        super().__init__(clock=clock)
        self.api_key = api_key
        self.marker_field = marker_field
        self.ticket_fields = dict(ticket_fields or {marker_field: "text"})
        self.required_fields = required_fields
        self.statuses = set(STATUSES) | set(custom_statuses)
        self.search_lag = search_lag
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self._rate = (-1, 0)  # (window number, credits used)
        self._ids = {"user": 2000, "ticket": 0, "conversation": 100000, "attachment": 700000}
        self._tickets: dict[int, Row] = {}
        self._contacts: dict[int, Row] = {}
        self._agents: dict[int, Row] = {}
        self._conversations: dict[int, list[Row]] = {}
        self._files: dict[int, bytes] = {}
        self._created: dict[int, float] = {}  # ticket id → clock at creation
        self._index: dict[tuple[str, int], list[tuple[float, Row]]] = {}
        self.contact_merges: dict[int, int] = {}  # secondary → primary
        self.ticket_merges: dict[int, int] = {}
        self.api_agent = self._add_agent("Helpline API", "api@helpline.test")
        self.human_agent = self._add_agent("Ada Agent", "ada@support.test")
        self.hooks = Emitter(
            lock=self.lock,
            clock=self.clock,
            loop=lambda: self._loop,
            consume=lambda: self._meter(1),
            time_scale=webhook_time_scale,
            timeout=webhook_timeout,
            budget=webhook_budget,
        )

    def stop(self) -> None:
        """Cancel webhook retries still waiting, then stop serving."""
        if self._loop is not None:
            self.run(self.hooks.cancel(), timeout=5.0)
        super().stop()

    # -- test controls -----------------------------------------------------------------
    def set_webhook(self, url: str, **hook: Any) -> Hook:
        """Configure the "Reply is sent → Trigger webhook" rule (see freshdesk_hooks.Hook).

        Default condition: the helpline marker field is not empty, as §6.8 suggests.
        """
        hook.setdefault("condition", lambda t: bool(t["custom_fields"].get(self.marker_field)))
        plain = tuple(f for f in DEFAULT_SIMPLE if not f.startswith("ticket.cf_"))
        hook.setdefault("simple_fields", (*plain, f"ticket.{self.marker_field}"))
        with self.lock:
            self.hooks.hook = Hook(url, **hook)
            return self.hooks.hook

    def clear_webhook(self) -> None:
        with self.lock:
            self.hooks.hook = None

    def throttle(self, n_requests: int, retry_after: int | None = 60) -> None:
        """The next `n_requests` API calls answer 429 (nothing committed)."""
        headers = {"X-RateLimit-Total": str(self.rate_limit), "X-RateLimit-Remaining": "0"}
        headers["X-RateLimit-Used-CurrentRequest"] = "1"
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self.arm(Status(429, THROTTLED, headers), path=f"^{API}/", times=n_requests)

    def flush_index(self) -> None:
        """Let the search index catch up at once."""
        with self.lock:
            for versions in self._index.values():
                versions[:] = [(0.0, versions[-1][1])]

    def agent_reply(
        self,
        ticket_id: int,
        text: str,
        *,
        public: bool = True,
        attachments: Iterable[tuple[str, str, bytes]] = (),
        author: int | None = None,
    ) -> Row:
        """An agent answers in the Freshdesk UI: a reply (public) or a private note."""
        with self.lock:
            author = author or self.human_agent
            if ticket_id not in self._tickets or author not in self._agents:
                raise KeyError("no such ticket or agent")
            kind = CONV_REPLY if public else CONV_NOTE
            row = converse(
                self, ticket_id, kind, text, author, private=not public, files=attachments
            )
            return copy.deepcopy(row)

    # -- accessors for assertions (copies, taken under the lock) -------------------------
    def tickets(self) -> list[Row]:
        with self.lock:
            return [copy.deepcopy(t) for _, t in sorted(self._tickets.items())]

    def ticket(self, ticket_id: int) -> Row | None:
        with self.lock:
            return copy.deepcopy(self._tickets.get(ticket_id))

    def tickets_by_marker(self, value: str) -> list[Row]:
        return [t for t in self.tickets() if t["custom_fields"].get(self.marker_field) == value]

    def conversations(self, ticket_id: int) -> list[Row]:
        """API shape plus `author` (id, name, email, agent) and each attachment's `data`."""
        with self.lock:
            rows = copy.deepcopy(self._conversations.get(ticket_id, []))
            for row in rows:
                user = self._user(row["user_id"]) or {}
                row["author"] = {k: user.get(k) for k in ("id", "name", "email")}
                row["author"]["agent"] = row["user_id"] in self._agents
                for item in row["attachments"]:
                    item["data"] = self._files[item["id"]]
            return rows

    def contacts(self) -> list[Row]:
        with self.lock:
            return [copy.deepcopy(c) for _, c in sorted(self._contacts.items())]

    def contact(self, contact_id: int) -> Row | None:
        with self.lock:
            return copy.deepcopy(self._contacts.get(contact_id))

    def agents(self) -> list[Row]:
        with self.lock:
            return [copy.deepcopy(a) for a in self._agents.values()]

    def deliveries(self) -> list[Delivery]:
        return self.hooks.snapshot()

    def failure_emails(self) -> list[Row]:
        with self.lock:
            return list(self.hooks.failure_emails)

    async def wait_deliveries(
        self, check: Callable[[list[Delivery]], bool], timeout: float = 5.0
    ) -> list[Delivery]:
        """Bounded wait in the caller's loop, e.g. `lambda ds: ds and ds[0].state == "failed"`."""
        return await self.hooks.until(check, timeout)

    async def replay(self, number: int) -> Delivery:
        """Re-send delivery `number` byte for byte (what a receiver sees on a duplicate).

        Awaited in the test's loop, so a receiver served by that loop can answer."""
        return await self._on_loop(self.hooks.resend(number))

    async def forge(
        self, number: int, *, headers: dict[str, str] | None = None, drop: tuple[str, ...] = ()
    ) -> Delivery:
        """Re-send delivery `number` with headers changed or dropped (wrong secret, no auth).

        Freshdesk has no signature or timestamp, so these stand for "bad signature"."""
        resend = self.hooks.resend(number, headers=headers, drop=drop, kind="forged")
        return await self._on_loop(resend)

    async def _on_loop(self, coro: Coroutine[Any, Any, Delivery]) -> Delivery:
        assert self._loop is not None, "the fake is not running"
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    # -- state helpers -------------------------------------------------------------------
    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def _add_agent(self, name: str, email: str) -> int:
        uid = self._next("user")
        now = iso(self.clock())
        contact = {"name": name, "email": email, "active": True, "job_title": None}
        self._agents[uid] = {"id": uid, "available": True, "occasional": False}
        self._agents[uid] |= {"contact": contact, "created_at": now, "updated_at": now}
        return uid

    def _user(self, uid: int) -> Row | None:
        if uid in self._agents:
            agent = self._agents[uid]
            return {"id": uid, **agent["contact"]}
        return self._contacts.get(uid)

    def _reindex(self, kind: str, row: Row) -> None:
        versions = self._index.setdefault((kind, row["id"]), [])
        versions.append((self.clock() + self.search_lag, copy.deepcopy(row)))

    def _searchable(self, kind: str) -> list[Row]:
        now, rows = self.clock(), []
        for (k, _), versions in sorted(self._index.items()):
            ready = [row for at, row in versions if at <= now]
            if k == kind and ready:
                rows.append(ready[-1])
        return rows

    def _meter(self, cost: int) -> dict[str, str]:
        """Count `cost` credits in this window; the three headers, + Retry-After when over."""
        with self.lock:
            now = self.clock()
            window = math.floor(now / self.rate_window)
            used = (self._rate[1] if self._rate[0] == window else 0) + cost
            self._rate = (window, used)
        headers = {
            "X-RateLimit-Total": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(self.rate_limit - used, 0)),
            "X-RateLimit-Used-CurrentRequest": str(cost),
        }
        if used > self.rate_limit:
            headers["Retry-After"] = str(math.ceil((window + 1) * self.rate_window - now))
        return headers

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user = base64.b64decode(token, validate=True).decode().partition(":")[0]
        except ValueError:
            return False
        return user == self.api_key  # any password; convention "X"

    # -- routes ----------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.middlewares.append(self._api_middleware)  # inside the harness's (log, faults)
        add_routes(self, app)

    @web.middleware
    async def _api_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API + "/"):
            return await handler(request)
        includes = [i for i in request.query.get("include", "").split(",") if i]
        headers = self._meter(1 + len(includes))  # invalid calls count too (§6.7)
        try:
            if "Retry-After" in headers:
                raise FdError(429, THROTTLED)
            if not self._authorized(request):
                raise FdError(401, UNAUTHORIZED)
            response = await handler(request)
        except FdError as err:
            response = json_answer(err.status, err.body)
        except web.HTTPNotFound:
            response = json_answer(404, None)
        except web.HTTPMethodNotAllowed as err:
            message = f"{request.method} Method is not allowed. It should be one of these "
            message += f"method(s): {', '.join(sorted(err.allowed_methods))}"
            response = json_answer(405, {"code": "method_not_allowed", "message": message})  # ◐
        response.headers.update(headers)
        return response
