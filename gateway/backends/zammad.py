"""The `zammad` backend: conversations as Zammad tickets, agents' answers back by webhook.

Delivery is zammad_api.py under the shared create-once protocol. Answers come
back through a Zammad Trigger → Webhook at POST /hooks/NAME (reference §4.6):
the `X-Hub-Signature` (HMAC-SHA1 of the raw body with the webhook's signature
token) is checked in constant time; Zammad signs no timestamp, so a replay is
caught by the delivery id (`X-Zammad-Delivery`, the same on Zammad's retries)
and, durably, by the article id, the key the reply is recorded under. Only a
public article by an agent becomes a reply: internal notes, customer articles,
anything helpline wrote itself (its API user, its `@helpline` message ids) and
email articles (Zammad has mailed those already) are answered 200 and dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from typing import Any, ClassVar

import html_text
import nh3
import orjson
from aiohttp import web
from pydantic import Field, field_validator

from gateway.attachments import NewAttachment
from gateway.backends.zammad_api import ZammadApi, is_marked
from gateway.component import ComponentContext
from gateway.config_types import Secret
from gateway.delivery.component import HelpdeskBackend
from gateway.delivery.failures import DeliveryFailure, PermanentFailure, TemporaryFailure
from gateway.delivery.settings import DeliverySection
from gateway.delivery.tickets import TicketApi
from gateway.units import ByteSize

SEEN_DELIVERIES = 1000  # delivery ids remembered in memory; the article id is the durable key
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ZammadConfig(DeliverySection):
    # Zammad's address, e.g. https://zammad.example.com (the API is under /api/v1).
    url: str
    # The API user's access token (Profile > Token Access; ticket.agent, admin.user optional).
    token: Secret
    # The group new tickets go to (Zammad's default group is "Users").
    group: str = Field(default="Users", min_length=1)
    # The ticket attribute (Admin > Objects > Ticket, type text) holding the conversation id.
    marker_attribute: str = "helpline_cid"
    # Tags set on every ticket helpline creates (condition Zammad's triggers on them).
    tags: list[str] = Field(default_factory=lambda: ["helpline"])
    # Zammad states for a conversation resolved / reopened; "" leaves the state alone.
    resolve_state: str = "closed"
    reopen_state: str = "open"
    # The webhook's "HMAC SHA1 Signature Token"; without it agent replies are refused (401).
    webhook_token: Secret | None = None
    # An agent's attachment larger than this is left out of the reply (the text still goes).
    max_attachment_size: ByteSize = 25 * 1024 * 1024

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the url must start with https:// (or http:// for a test server)")
        return value.rstrip("/").removesuffix("/api/v1")

    @field_validator("marker_attribute")
    @classmethod
    def _attribute_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "a Zammad attribute name is lower-case letters, digits and _, from a letter"
            )
        return value


class ZammadBackend(HelpdeskBackend):
    config_model: ClassVar[type[ZammadConfig]] = ZammadConfig

    def __init__(self, name: str, config: ZammadConfig) -> None:
        super().__init__(name, config)
        self.config: ZammadConfig = config
        self._api: ZammadApi | None = None
        self._deliveries: OrderedDict[str, None] = OrderedDict()

    def make_api(self, ctx: ComponentContext) -> TicketApi:
        cfg = self.config
        self._api = ZammadApi(
            cfg.url,
            cfg.token.get_secret_value(),
            self.handle,
            ctx.log,
            timeout=cfg.timeout,
            group=cfg.group,
            attribute=cfg.marker_attribute,
            states={"resolved": cfg.resolve_state, "open": cfg.reopen_state},
            tags=cfg.tags,
        )
        return self._api

    async def check(self) -> str:
        me = await self.api.whoami()
        await self.api.check_attribute()
        who = me.get("login") or me.get("email") or me.get("id")
        hooks = "webhook signed" if self.config.webhook_token else "no webhook_token: no replies"
        return (
            f"signed in as {who} (user {me['id']}); ticket attribute "
            f"{self.config.marker_attribute} present; group {self.config.group}; {hooks}"
        )

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()

    @property
    def api(self) -> ZammadApi:
        if self._api is None:
            raise RuntimeError("the zammad backend is not started")
        return self._api

    # -- agent replies -------------------------------------------------------
    async def hook(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("POST", "PUT", "PATCH"):  # the webhook's method is a setting
            raise web.HTTPMethodNotAllowed(request.method, ["POST", "PUT", "PATCH"])
        body = await request.read()
        refusal = self._verify(request.headers.get("X-Hub-Signature", ""), body)
        if refusal is not None:
            return self.refused(refusal)
        delivery = request.headers.get("X-Zammad-Delivery", "")
        if delivery and delivery in self._deliveries:
            self.ctx.log.info("backend.hook_repeated", delivery=delivery)
            return web.json_response({"duplicate": True})
        try:
            payload = orjson.loads(body)
            ticket, article = payload["ticket"], payload["article"]
            ticket_id, article_id = int(ticket["id"]), int(article["id"])
        except (orjson.JSONDecodeError, TypeError, ValueError, KeyError):
            return web.json_response(
                {"error": "not Zammad's default webhook payload (ticket and article)"}, status=422
            )
        try:
            answer = await self._take(ticket_id, ticket, article_id, article)
        except DeliveryFailure as err:
            # Zammad retries (5 attempts); nothing was recorded, the article id keys it anyway.
            self.ctx.log.warning("backend.hook_failed", ticket=ticket_id, error=str(err))
            return web.json_response({"error": "cannot take the reply now"}, status=503)
        if delivery:
            self._deliveries[delivery] = None
            while len(self._deliveries) > SEEN_DELIVERIES:
                self._deliveries.popitem(last=False)
        return web.json_response(answer)

    def _verify(self, signature: str, body: bytes) -> str | None:
        token = self.config.webhook_token
        if token is None:
            return "no webhook_token is configured for this backend"
        if not signature:
            return "missing X-Hub-Signature (set the webhook's HMAC SHA1 Signature Token)"
        mac = hmac.new(token.get_secret_value().encode(), body, hashlib.sha1).hexdigest()
        given = signature.strip().encode("utf-8", "replace")
        if not hmac.compare_digest(given, f"sha1={mac}".encode()):
            return "the X-Hub-Signature does not match the configured webhook_token"
        return None

    async def _take(
        self, ticket_id: int, ticket: dict[str, Any], article_id: int, article: dict[str, Any]
    ) -> dict[str, Any]:
        """Record the article as an agent's reply, unless it is not one (the reason why)."""
        ignored = await self._ignored(article) or await self._not_ours(ticket_id, ticket)
        if ignored is not None:
            self.ctx.log.info(
                "backend.reply_ignored", ticket=ticket_id, article=article_id, reason=ignored
            )
            return {"ignored": ignored}
        body = str(article.get("body") or "")
        html = nh3.clean(body) if article.get("content_type") == "text/html" else None
        text = html_text.extract_text(html) if html is not None else body
        files = await self._files(ticket_id, article_id, article)
        if not text.strip() and not files:
            return {"ignored": "an empty article"}
        ack = await self.agent_reply(
            str(ticket_id),
            text=text,
            html=html,
            key=f"article-{article_id}",
            author=_author(article),
            attachments=files,
        )
        if ack is None:
            return {"ignored": "not a ticket helpline created"}
        return ack.as_json()

    async def _ignored(self, article: dict[str, Any]) -> str | None:
        if article.get("internal"):
            return "an internal article"
        if article.get("sender") != "Agent":
            return f"sender {article.get('sender')!r}, not Agent"
        if is_marked(article.get("message_id")):
            return "written by helpline"
        creator = article.get("created_by_id") or (article.get("created_by") or {}).get("id")
        me = await self.api.whoami()  # cached after the start-up check
        if creator is not None and int(creator) == int(me["id"]):
            return "written by helpline's API user"
        if article.get("type") == "email":
            return "an email article: Zammad sends it to the customer itself"
        return None

    async def _not_ours(self, ticket_id: int, ticket: dict[str, Any]) -> str | None:
        """Why the ticket is not one to take replies from, or None. A ticket whose create
        helpline has not seen answered yet (its map row still pending) is ours: the webhook
        is refused for now, so Zammad delivers it again once the map is written."""
        if await self.handle.conversation_of_ticket(str(ticket_id)) is not None:
            return None
        conversation = ticket.get(self.config.marker_attribute)
        ref = None
        if isinstance(conversation, str) and conversation:
            ref = await self.handle.ref("ticket", conversation)
        if ref is not None and ref.state == "pending":
            raise TemporaryFailure(f"ticket {ticket_id}: its create is not confirmed yet")
        if ref is not None:
            return f"conversation {conversation} has ticket {ref.remote_id}, not this one"
        return "not a ticket helpline created"

    async def _files(
        self, ticket_id: int, article_id: int, article: dict[str, Any]
    ) -> list[NewAttachment]:
        files = []
        for att in article.get("attachments") or []:
            prefs = att.get("preferences") or {}
            size = int(att.get("size") or 0)
            if size > self.config.max_attachment_size:
                self.ctx.log.warning(
                    "backend.attachment_skipped", article=article_id, size=size, file=att.get("id")
                )
                continue
            try:
                data = await self.api.download(
                    ticket_id, article_id, int(att["id"]), self.config.max_attachment_size
                )
            except PermanentFailure as err:  # larger than said, or gone: the rest goes on
                self.ctx.log.warning(
                    "backend.attachment_skipped", article=article_id, error=str(err)
                )
                continue
            files.append(
                NewAttachment(
                    filename=att.get("filename"),
                    declared_type=prefs.get("Mime-Type")
                    or prefs.get("Content-Type")
                    or "application/octet-stream",
                    data=data,
                    content_id=prefs.get("Content-ID"),
                    inline=prefs.get("Content-Disposition") == "inline",
                )
            )
        return files


def _author(article: dict[str, Any]) -> str | None:
    who = article.get("created_by")
    if isinstance(who, dict):
        name = f"{who.get('firstname') or ''} {who.get('lastname') or ''}".strip()
        if name:
            return name
    return str(article.get("from") or "") or None
