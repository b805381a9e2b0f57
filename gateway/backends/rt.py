"""The `rt` backend: conversations as Request Tracker 5 tickets, agents' answers by polling.

Delivery is rt_api.py under the shared create-once protocol. RT has no
webhooks, so agents' replies are read back with TransactionSQL: every
`poll_interval`, the correspondence newer than a durable cursor (the last
transaction id taken), written by anybody but helpline's own API user and by
privileged users only (a customer mailing RT directly is not an agent). The
cursor moves only after the reply is recorded, and each reply is keyed on its
transaction id, so a crash or a repeated poll never sends the customer a reply
twice. Comments are internal and never taken.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html as htmllib
import re
import urllib.parse
from typing import Any, ClassVar

import nh3
from pydantic import Field, field_validator, model_validator

from gateway.attachments import NewAttachment
from gateway.backends.rt_api import REST, RtApi, sql
from gateway.component import ComponentContext, ComponentState, Health
from gateway.config_types import Secret
from gateway.delivery.component import HelpdeskBackend
from gateway.delivery.failures import DeliveryFailure, TemporaryFailure
from gateway.delivery.http import JsonClient
from gateway.delivery.settings import DeliverySection
from gateway.delivery.tickets import TicketApi
from gateway.units import Duration

CURSOR = "cursor"  # handle.state key: the id of the last transaction looked at
_TOKEN = re.compile(r"^1-(\d+)-[0-9a-fA-F]{32}$")  # RT::AuthToken: version-userid-secret
POLL_FIELDS = "Type,Creator,ObjectId,ObjectType"
CREATOR_FIELDS = "Name,RealName"  # Privileged here is not the flag: see _privileged


class RtConfig(DeliverySection):
    # RT's web address (https://rt.example.com); REST2 is under /REST/2.0.
    url: str
    # The queue helpline's tickets go to.
    queue: str = "Helpline"
    # An auth token of the API user (RT: Settings > Auth Tokens) ...
    token: Secret | None = None
    # ... or the API user's name and RT password (Basic auth).
    user: str | None = None
    password: Secret | None = None
    # The ticket custom field holding helpline's conversation id.
    ticket_cf: str = Field(default="Helpline-Conversation", min_length=1)
    # The transaction custom field holding helpline's event id.
    event_cf: str = Field(default="Helpline-Event", min_length=1)
    # RT statuses for a conversation resolved / reopened; "" leaves the status alone.
    resolve_status: str = "resolved"
    reopen_status: str = "open"
    # How often RT is asked for agents' new replies.
    poll_interval: Duration = Field(default=10.0, ge=0.1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the url must start with https:// (or http:// for a test server)")
        value = value.rstrip("/")
        return value.removesuffix(REST).rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> RtConfig:
        if self.token is None and (self.user is None or self.password is None):
            raise ValueError("give token (an RT auth token), or user and password")
        if self.token is not None and self.password is not None:
            raise ValueError("give token or password, not both")
        token = self.token.get_secret_value().strip() if self.token is not None else ""
        if token and self.user is None and not _TOKEN.match(token):
            raise ValueError(
                "this token does not look like an RT 5 auth token (1-<user id>-<32 hex>); "
                "set user to the API user's name so its own replies are recognised"
            )
        return self


def credentials(config: RtConfig) -> tuple[str, str]:
    """The Authorization header, and helpline's RT user as TransactionSQL's Creator takes
    it: the configured name, else the token's user id (an RT auth token names its owner)."""
    if config.token is not None:
        token = config.token.get_secret_value().strip()
        match = _TOKEN.match(token)
        return f"token {token}", config.user or (match.group(1) if match else "")
    password = config.password.get_secret_value() if config.password is not None else ""
    pair = f"{config.user}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode(), config.user or ""


class RtBackend(HelpdeskBackend):
    config_model: ClassVar[type[RtConfig]] = RtConfig

    def __init__(self, name: str, config: RtConfig) -> None:
        super().__init__(name, config)
        self.config: RtConfig = config
        self._client: JsonClient | None = None
        self._api: RtApi | None = None
        self._auth, self.me = credentials(config)
        self.polls_failed = 0
        self._poll_error: str | None = None
        self._staff: dict[str, bool] = {}

    def make_api(self, ctx: ComponentContext) -> TicketApi:
        cfg = self.config
        self._client = JsonClient(
            cfg.url, headers={"Authorization": self._auth}, timeout=cfg.timeout
        )
        statuses = {"resolved": cfg.resolve_status, "open": cfg.reopen_status}
        self._api = RtApi(
            self._client,
            self.handle,
            queue=cfg.queue,
            ticket_cf=cfg.ticket_cf,
            event_cf=cfg.event_cf,
            statuses=statuses,
        )
        return self._api

    @property
    def api(self) -> RtApi:
        if self._api is None:
            raise RuntimeError("the rt backend is not started")
        return self._api

    async def check(self) -> str:
        """Who helpline is in RT, and that the queue carries both custom fields."""
        me = await self.api.get(f"/user/{self.me}")
        queue = await self.api.check_fields()
        return (
            f"signed in as {me.get('Name')} (user {me.get('id')}); queue {queue.get('Name')} "
            f"(id {queue.get('id')}) has {self.config.ticket_cf} and {self.config.event_cf}"
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def health(self) -> Health:
        health = super().health()
        counters = {**health.counters, "polls_failed": self.polls_failed}
        if self._poll_error is None:
            return dataclasses.replace(health, counters=counters)
        state = health.state
        if state is ComponentState.RUNNING:
            state = ComponentState.DEGRADED  # tickets go in, but no answer comes back
        return dataclasses.replace(
            health,
            state=state,
            last_error=health.last_error or f"poll: {self._poll_error}",
            counters=counters,
        )

    # -- agent replies -----------------------------------------------------------
    async def poll(self) -> None:
        """Take agents' replies for ever; failures wait and retry, the cursor stays."""
        cursor: int | None = None
        failures = 0
        while True:
            try:
                if cursor is None:
                    cursor = await self._first_cursor()
                cursor = await self.poll_once(cursor)
                failures = 0
                self._poll_error = None
                delay = self.config.poll_interval
            except DeliveryFailure as err:
                failures += 1
                self.polls_failed += 1
                self._poll_error = str(err)
                delay = min(
                    self.config.retry_cap, max(self.config.poll_interval, 2.0 ** min(failures, 8))
                )
                self.ctx.log.warning("backend.poll_failed", error=str(err), retry_in=delay)
            await asyncio.sleep(delay)

    async def _first_cursor(self) -> int:
        """The durable cursor; on the very first start RT's newest transaction, so that
        answers given before helpline was connected are not sent now."""
        stored = await self.handle.state(CURSOR)
        if stored is not None:
            return int(stored)
        newest = await self.api.get(
            "/transactions",
            {"query": "id > 0", "orderby": "id", "order": "DESC", "per_page": "1"},
        )
        items = newest.get("items") or []
        cursor = int(items[0]["id"]) if items else 0
        await self.handle.put_state(CURSOR, str(cursor))
        self.ctx.log.info("backend.poll_started", cursor=cursor)
        return cursor

    async def poll_once(self, cursor: int) -> int:
        """Take the correspondence after `cursor`; the new cursor."""
        query = (
            "Type = 'Correspond' AND ObjectType = 'RT::Ticket' "
            f"AND Creator != {sql(self.me)} AND id > {cursor}"
        )
        found = await self.api.search(
            "transactions",
            query,
            orderby="id",
            order="ASC",
            fields=POLL_FIELDS,
            **{"fields[Creator]": CREATOR_FIELDS},
        )
        moved = cursor
        for txn in found:
            txn_id = int(txn["id"])
            if txn_id <= moved:
                continue
            await self._take(txn)
            moved = txn_id
            await self.handle.put_state(CURSOR, str(moved))
        return moved

    async def _take(self, txn: dict[str, Any]) -> None:
        creator = txn.get("Creator") or {}
        ticket = str(txn.get("ObjectId", ""))
        if txn.get("Type") != "Correspond" or txn.get("ObjectType") != "RT::Ticket":
            return
        if await self.handle.conversation_of_ticket(ticket) is None:
            if await self.handle.creates_unanswered():
                # Perhaps the ticket whose create is not confirmed yet: read this one
                # again at the next poll (the cursor stays before it).
                raise TemporaryFailure(f"ticket {ticket} is not mapped yet")
            return  # not one of helpline's tickets: no need to read it
        if not await self._privileged(str(creator.get("id") or creator.get("Name") or "")):
            return  # a requestor writing to RT directly (mail, self-service): not an agent
        text, html, files = await self._content(str(txn["id"]))
        if not text.strip() and not files:
            return
        await self.agent_reply(
            ticket,
            text=text,
            html=nh3.clean(html) if html else None,
            key=f"txn-{txn['id']}",
            author=creator.get("RealName") or creator.get("Name") or creator.get("id"),
            attachments=files,
        )

    async def _privileged(self, user: str) -> bool:
        """Whether an RT user is staff (privileged); asked once per user and run."""
        if user not in self._staff:
            record = await self.api.get(f"/user/{urllib.parse.quote(user, safe='')}")
            self._staff[user] = bool(int(record.get("Privileged") or 0))
        return self._staff[user]

    async def _content(self, txn_id: str) -> tuple[str, str | None, list[NewAttachment]]:
        """The reply's text (its first text part without a file name), its HTML when the
        agent wrote HTML, and its files."""
        parts = await self.api.collection(
            f"/transaction/{txn_id}/attachments", fields="Filename,ContentType"
        )
        text: str | None = None
        html: str | None = None
        files: list[NewAttachment] = []
        for part in parts:
            kind = str(part.get("ContentType") or "").lower()
            name = part.get("Filename") or ""
            if kind.startswith("multipart/"):
                continue
            if not name and kind in ("text/plain", "text/html"):
                if (kind == "text/plain" and text is not None) or (
                    kind == "text/html" and html is not None
                ):
                    continue
                content = _decoded(await self.api.get(f"/attachment/{part['id']}"))
                if kind == "text/plain":
                    text = content.decode("utf-8", "replace")
                else:
                    html = content.decode("utf-8", "replace")
                continue
            if name:
                record = await self.api.get(f"/attachment/{part['id']}")
                files.append(
                    NewAttachment(
                        filename=name,
                        declared_type=kind or "application/octet-stream",
                        data=_decoded(record),
                    )
                )
        if text is None:
            text = html_text(html) if html else ""
        return text, html, files


def _decoded(record: dict[str, Any]) -> bytes:
    """An attachment record's bytes (REST2 sends Content base64-encoded)."""
    content = record.get("Content")
    return base64.b64decode(content) if content else b""


_BREAK = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h[1-6])\b[^>]*>", re.IGNORECASE)
_DROP = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def html_text(html: str) -> str:
    """Plain text of an agent's HTML reply (RT's editor writes HTML only)."""
    text = _BREAK.sub("\n", _DROP.sub("", html))
    text = htmllib.unescape(_TAG.sub("", text)).replace("\xa0", " ")
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
