"""The `zendesk` backend: conversations as Zendesk tickets, agents' answers back by webhook.

Delivery is zendesk_api.py under the shared create-once protocol. Answers come
back through a Zendesk webhook (a trigger on comment added) at POST
/hooks/NAME: its signature (HMAC-SHA256 of timestamp + body, base64, with the
webhook's signing secret) and timestamp are checked, then the ticket's
comments are read from the API, never from the webhook body, and each public
comment by an agent other than helpline's own API user, newer than the last
one taken from that ticket, becomes a reply. That per-ticket mark is durable,
so a replayed or repeated webhook never sends the customer anything twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import datetime
from typing import Any, ClassVar, Literal

import orjson
from aiohttp import web
from pydantic import Field, field_validator

from gateway.attachments import NewAttachment
from gateway.backends.zendesk_api import ZendeskApi
from gateway.component import ComponentContext
from gateway.config_types import Secret
from gateway.delivery.component import HelpdeskBackend
from gateway.delivery.failures import DeliveryFailure, PermanentFailure, TemporaryFailure
from gateway.delivery.http import JsonClient
from gateway.delivery.settings import DeliverySection
from gateway.delivery.tickets import TicketApi
from gateway.units import ByteSize, Duration

Order = Literal["timestamp+body", "body+timestamp"]
ROLES_CACHED = 1000


class ZendeskConfig(DeliverySection):
    # https://SUBDOMAIN.zendesk.com
    url: str
    # The API user's email and API token (Basic "{email}/token:{token}").
    email: str
    token: Secret
    # The webhook's signing secret (Admin Center > Webhooks > the webhook > Reveal secret);
    # without it, agent replies are not taken (POST /hooks/NAME answers 401).
    webhook_secret: Secret | None = None
    # ◐ Zendesk documents timestamp + body; older pages showed body + timestamp.
    signature_order: Order = "timestamp+body"
    # How far a webhook's timestamp may be from now.
    tolerance: Duration = Field(default=300.0, gt=0)
    # Tags on every ticket helpline creates (condition your triggers on them).
    tags: list[str] = Field(default_factory=lambda: ["helpline"])
    # Zendesk statuses for a conversation resolved / reopened; "" leaves the status alone.
    resolve_status: Literal["", "solved", "closed", "pending", "hold"] = "solved"
    reopen_status: Literal["", "open", "new", "pending"] = "open"
    # An agent's attachment larger than this is left out of the reply (the rest goes on).
    max_attachment_size: ByteSize = 25 * 1024 * 1024

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the url must start with https:// (or http:// for a test server)")
        return value.rstrip("/")


class ZendeskBackend(HelpdeskBackend):
    config_model: ClassVar[type[ZendeskConfig]] = ZendeskConfig

    def __init__(self, name: str, config: ZendeskConfig) -> None:
        super().__init__(name, config)
        self.config: ZendeskConfig = config
        self._client: JsonClient | None = None
        self._api: ZendeskApi | None = None
        self._me: int | None = None
        self._roles: dict[int, str] = {}  # user id -> role, for telling agents apart

    def make_api(self, ctx: ComponentContext) -> TicketApi:
        cfg = self.config
        self._client = JsonClient(
            cfg.url,
            headers={},
            timeout=cfg.timeout,
            basic=(f"{cfg.email}/token", cfg.token.get_secret_value()),
        )
        statuses: dict[str, str] = {"resolved": cfg.resolve_status, "open": cfg.reopen_status}
        self._api = ZendeskApi(self._client, self.handle, tags=cfg.tags, statuses=statuses)
        return self._api

    async def check(self) -> str:
        me = await self.api.me()
        self._me = int(me["id"])
        who = me.get("email") or me.get("name")
        return f"signed in as {who} (user {self._me}, {me.get('role')})"

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    @property
    def api(self) -> ZendeskApi:
        if self._api is None:
            raise RuntimeError("the zendesk backend is not started")
        return self._api

    # -- agent replies -------------------------------------------------------
    async def hook(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        body = await request.read()
        refusal = self._verify(request.headers, body)
        if refusal is not None:
            return self.refused(refusal)
        try:
            payload = orjson.loads(body)
            ticket_id = str(int(_ticket_id(payload)))
        except (orjson.JSONDecodeError, TypeError, ValueError, KeyError):
            return web.json_response(
                {"error": 'the body names no ticket: use {"ticket_id": "{{ticket.id}}"}'},
                status=422,
            )
        try:
            taken = await self._take_replies(ticket_id)
        except DeliveryFailure as err:
            # Zendesk retries the webhook; nothing was recorded past the last committed mark.
            self.ctx.log.warning("backend.hook_read_failed", ticket=ticket_id, error=str(err))
            return web.json_response({"error": "cannot read the ticket now"}, status=503)
        return web.json_response({"taken": taken})

    def _verify(self, headers: Any, body: bytes) -> str | None:
        secret = self.config.webhook_secret
        if secret is None:
            return "no webhook_secret is configured for this backend"
        signature = headers.get("X-Zendesk-Webhook-Signature", "")
        stamp = headers.get("X-Zendesk-Webhook-Signature-Timestamp", "")
        if not signature or not stamp:
            return "missing X-Zendesk-Webhook-Signature or -Timestamp"
        try:
            at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return "the signature timestamp is not an ISO 8601 time"
        if abs(time.time() - at) > self.config.tolerance:
            return f"the signature timestamp {stamp} is outside the tolerance: a possible replay"
        signed = stamp.encode() + body
        if self.config.signature_order == "body+timestamp":
            signed = body + stamp.encode()
        mac = hmac.new(secret.get_secret_value().encode(), signed, hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(mac), signature.encode(errors="replace")):
            return "the webhook signature does not match the configured secret"
        return None

    async def _take_replies(self, ticket_id: str) -> int:
        if await self.handle.conversation_of_ticket(ticket_id) is None:
            if await self.handle.creates_unanswered():
                raise TemporaryFailure(f"ticket {ticket_id} is not mapped yet")  # 503: retried
            return 0  # not one of helpline's tickets
        if self._me is None:
            self._me = int((await self.api.me())["id"])
        ticket = await self.api.ticket(ticket_id)
        mark_key = f"seen:{ticket_id}"
        seen = int(await self.handle.state(mark_key) or 0)
        taken = 0
        for comment in await self.api.comments(ticket_id):
            comment_id = int(comment["id"])
            if comment_id <= seen:
                continue
            if self._is_agent_answer(comment, ticket) and await self._is_agent(comment):
                await self.agent_reply(
                    ticket_id,
                    text=comment.get("plain_body") or comment.get("body") or "",
                    html=comment.get("html_body"),
                    key=f"comment-{comment_id}",
                    author=str(comment.get("author_id")),
                    attachments=await self._files(comment),
                )
                taken += 1
            await self.handle.put_state(mark_key, str(comment_id))
        return taken

    def _is_agent_answer(self, comment: dict[str, Any], ticket: dict[str, Any]) -> bool:
        author = comment.get("author_id")
        return (
            bool(comment.get("public"))
            and author is not None
            and author != self._me
            and author != ticket.get("requester_id")
        )

    async def _is_agent(self, comment: dict[str, Any]) -> bool:
        """Whether the author is an agent: an end user other than the requester (a CC,
        or a customer helpline posted for) never answers for the team."""
        author = int(comment["author_id"])
        known = self._roles.get(author)
        if known is None:
            known = await self.api.role(str(author))
            if len(self._roles) >= ROLES_CACHED:
                self._roles.clear()
            self._roles[author] = known
        return known in ("agent", "admin")

    async def _files(self, comment: dict[str, Any]) -> list[NewAttachment]:
        files = []
        for att in comment.get("attachments") or []:
            size = int(att.get("size") or 0)
            url = att.get("content_url")
            if not url or size > self.config.max_attachment_size:
                continue
            try:
                data = await self.api.download(url, self.config.max_attachment_size)
            except PermanentFailure as err:  # gone or larger than said: the text still goes
                self.ctx.log.warning("backend.attachment_skipped", url=url, error=str(err))
                continue
            files.append(
                NewAttachment(
                    filename=att.get("file_name"),
                    declared_type=att.get("content_type") or "application/octet-stream",
                    data=data,
                )
            )
        return files


def _ticket_id(payload: Any) -> Any:
    """The ticket of a trigger body ({"ticket_id": ...}) or of a ticket event's envelope;
    KeyError when the body names none."""
    if not isinstance(payload, dict):
        raise KeyError("ticket_id")
    if "ticket_id" in payload:
        return payload["ticket_id"]
    detail = payload.get("detail")
    if not isinstance(detail, dict):
        raise KeyError("detail")
    return detail["id"]
