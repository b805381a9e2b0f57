"""The `freshdesk` backend: conversations as Freshdesk tickets, agents' answers back out.

Writing goes through `FreshdeskApi` (freshdesk_api.py) under the shared create-once
protocol. Agents' answers come back by an automation rule's "Trigger webhook" action,
which Freshdesk does not sign (backends.md §6.8): the call is authenticated by a shared
secret header and/or Basic auth, and its body is only a nudge naming the ticket. The
ticket's conversations are then read through the API, so nothing the caller wrote is
trusted, and public answers by agents other than helpline's own API agent are recorded,
each once, keyed by Freshdesk's conversation id.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
from typing import Any

import nh3
import orjson
from aiohttp import web

from gateway.attachments import NewAttachment
from gateway.backends.freshdesk_api import FreshdeskApi
from gateway.backends.freshdesk_config import FreshdeskConfig
from gateway.component import ComponentContext
from gateway.delivery.component import HelpdeskBackend
from gateway.delivery.failures import DeliveryFailure, PermanentFailure, TemporaryFailure
from gateway.delivery.tickets import TicketApi
from gateway.errors import IdempotencyConflict, InvalidInput
from gateway.web.problems import problem

MAX_HOOK_BODY = 1024 * 1024
MAP_WAIT = 3.0  # seconds a just-created ticket's map is waited for
AGENTS_REFRESH = 60.0  # seconds between re-reads of the agent list for an unknown id
CONV_REPLY, CONV_NOTE = 0, 2  # conversation `source` codes (◐ python-freshdesk samples)


class FreshdeskBackend(HelpdeskBackend):
    """A Freshdesk account as a `[backends.NAME]` with type = "freshdesk"."""

    config_model = FreshdeskConfig

    def __init__(self, name: str, config: FreshdeskConfig) -> None:
        super().__init__(name, config)
        self.settings = config
        self._api: FreshdeskApi | None = None
        self._me: int | None = None
        self._agents: dict[int, str] = {}
        self._agents_read = 0.0
        self._taking = asyncio.Lock()  # one webhook at a time: the per-ticket cursor
        self.hook = self._hook if config.hook_enabled else None

    # -- HelpdeskBackend -----------------------------------------------------------------
    def make_api(self, ctx: ComponentContext) -> TicketApi:
        self._api = FreshdeskApi(self.settings, self.handle, ctx.log)
        return self._api

    async def check(self) -> str:
        api = self.api
        me = await api.me()
        self._me = int(me["id"])
        who = (me.get("contact") or {}).get("email") or self._me
        marker = self.settings.marker_field
        exists = await api.field_exists(marker)
        if exists is None:
            raise PermanentFailure(f"the ticket field {marker} is not a single-line text field")
        if not exists:
            raise PermanentFailure(
                f"no ticket field {marker}: add a single-line text field (Admin → Ticket "
                f"Fields) whose API name is {marker}, or set marker_field"
            )
        replies = "webhook at /hooks/" + self.name if self.hook else "off (no webhook secret)"
        return f"writing as agent {who}; marker field {marker}; agent replies {replies}"

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()

    @property
    def api(self) -> FreshdeskApi:
        if self._api is None:
            raise RuntimeError(f"backend {self.name} is not started")
        return self._api

    # -- the automation webhook ----------------------------------------------------------
    async def _hook(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        refusal = self._unauthentic(request)
        if refusal is not None:
            return self.refused(refusal)
        if (request.content_length or 0) > MAX_HOOK_BODY:
            return problem(413, "body-too-large", "Request body too large", "at most 1 MiB")
        raw = await request.read()  # whole, within the listener's max_body_size
        if len(raw) > MAX_HOOK_BODY:
            return problem(413, "body-too-large", "Request body too large", "at most 1 MiB")
        ticket = _ticket_of(raw)
        if ticket is None:
            detail = 'the body names no ticket: use {"ticket_id": {{ticket.id}}}'
            return problem(400, "invalid-input", "No ticket id", detail)
        try:
            if not await self._ours(ticket):
                self.ctx.log.info("backend.reply_ignored", ticket=ticket, reason="not our ticket")
                return _json({"ticket": ticket, "taken": 0, "ignored": "not a helpline ticket"})
            async with self._taking:
                taken = await self._take_replies(ticket)
        except DeliveryFailure as err:
            # Freshdesk calls again at +5, +30 and +60 min: a later read may succeed.
            self.ctx.log.warning("backend.hook_read_failed", ticket=ticket, error=str(err))
            return problem(503, "unavailable", "Freshdesk could not be read", str(err))
        return _json({"ticket": ticket, "taken": taken})

    async def _ours(self, ticket: str) -> bool:
        """Whether the ticket is mapped to a conversation. A ticket carrying the marker but
        not mapped yet was just created (an auto-reply rule can answer within a second):
        wait for the map a moment, then fail so Freshdesk calls again in 5 minutes."""
        if await self.handle.conversation_of_ticket(ticket) is not None:
            return True
        answer = await self.api.client.request("GET", f"/tickets/{int(ticket)}", allow=(404,))
        fields = (answer.body or {}).get("custom_fields") if answer.status == 200 else None
        if not (fields or {}).get(self.settings.marker_field):
            return False
        deadline = time.monotonic() + MAP_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if await self.handle.conversation_of_ticket(ticket) is not None:
                return True
        raise TemporaryFailure(f"ticket {ticket} carries a conversation id not mapped yet")

    def _unauthentic(self, request: web.Request) -> str | None:
        """Why the call is refused, or None: every configured credential must match."""
        config = self.settings
        if config.webhook_secret is not None:
            sent = request.headers.get(config.webhook_header, "")
            if not _same(sent, config.webhook_secret.get_secret_value()):
                return f"missing or wrong {config.webhook_header} header"
        if config.webhook_user is not None and config.webhook_password is not None:
            given = _basic(request.headers.get("Authorization", ""))
            if given is None:
                return "missing or malformed Basic auth"
            wanted = (config.webhook_user, config.webhook_password.get_secret_value())
            if not (_same(given[0], wanted[0]) & _same(given[1], wanted[1])):
                return "wrong Basic auth credentials"
        return None

    async def _take_replies(self, ticket: str) -> int:
        """Record the agents' public answers on `ticket` not seen before; how many."""
        me = await self._my_id()
        key = f"replies:{ticket}"
        seen = int(await self.handle.state(key) or 0)
        taken = 0
        for row in await self.api.conversations(ticket):
            cid = int(row["id"])
            if cid <= seen:
                continue
            author = await self._answer_author(row, me)
            if author is not None:
                try:
                    ack = await self.agent_reply(
                        ticket,
                        text=str(row.get("body_text") or "").strip(),
                        html=nh3.clean(str(row.get("body") or "")) or None,
                        key=str(cid),
                        author=author,
                        attachments=await self._attachments(row),
                    )
                except (InvalidInput, IdempotencyConflict) as err:  # retrying cannot help
                    self.ctx.log.warning(
                        "backend.reply_refused", ticket=ticket, key=cid, error=str(err)
                    )
                    ack = None
                taken += int(ack is not None and not ack.duplicate)
            seen = cid
            await self.handle.put_state(key, str(seen))
        return taken

    async def _answer_author(self, row: dict[str, Any], me: int) -> str | None:
        """The agent's name if `row` is an answer for the customer, else None.

        Not: internal notes, the customer's own messages, and anything helpline's API
        agent wrote (helpline's copies of answers sent on other channels, §2.4)."""
        kinds = {CONV_REPLY: "reply", CONV_NOTE: "public_note"}
        kind = kinds.get(int(row.get("source", -1)))
        if kind not in self.settings.reply_kinds or row.get("private") or row.get("incoming"):
            return None
        user = row.get("user_id")
        if not isinstance(user, int) or user == me:
            return None
        if user not in self._agents and time.monotonic() - self._agents_read > AGENTS_REFRESH:
            agents = await self.api.agents()
            self._agents = {
                int(a["id"]): (a.get("contact") or {}).get("name") or "" for a in agents
            }
            self._agents_read = time.monotonic()
        if user not in self._agents:
            return None  # a contact's public note (a CC'd colleague), not an agent's answer
        return self._agents[user] or None

    async def _my_id(self) -> int:
        if self._me is None:
            self._me = int((await self.api.me())["id"])
        return self._me

    async def _attachments(self, row: dict[str, Any]) -> list[NewAttachment]:
        """The answer's files, fetched from their pre-signed URLs (the API key stays home)."""
        found: list[NewAttachment] = []
        limit = self.ctx.replies.config.ingest.max_attachment_size
        for item in row.get("attachments") or []:
            url, name = item.get("attachment_url"), item.get("name") or "attachment"
            if not url or int(item.get("size") or 0) > limit:
                continue
            try:
                data = await self.api.client.download(url, limit=limit)
            except PermanentFailure as err:  # gone or too large: the text still goes
                self.ctx.log.warning("backend.attachment_skipped", name=name, error=str(err))
                continue
            kind = item.get("content_type") or "application/octet-stream"
            found.append(NewAttachment(filename=name, declared_type=kind, data=data))
        return found


def _same(given: str, wanted: str) -> bool:
    return hmac.compare_digest(given.encode(errors="replace"), wanted.encode(errors="replace"))


def _basic(header: str) -> tuple[str, str] | None:
    """(user, password) of a Basic Authorization header, or None."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = (
            base64.b64decode(token.strip(), validate=True).decode().partition(":")
        )
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if colon else None


def _ticket_of(raw: bytes) -> str | None:
    """The ticket id in a simple ({"freshdesk_webhook": {"ticket_id"}}) or advanced body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    simple = body.get("freshdesk_webhook")
    for place in (simple if isinstance(simple, dict) else {}, body, body.get("ticket")):
        if not isinstance(place, dict):
            continue
        value = place.get("ticket_id", place.get("id"))
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return str(value)
        if isinstance(value, str) and value.strip().isdigit():
            return str(int(value))
    return None


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
