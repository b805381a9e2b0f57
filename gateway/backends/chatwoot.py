"""The `chatwoot` backend: conversations into a Chatwoot API-channel inbox, answers back.

Each helpline conversation becomes one Chatwoot conversation in an API-channel
inbox (chatwoot_api.py says how it is made exactly once); customer messages are
`incoming`, agent replies written elsewhere `outgoing`, calls and automatic mail
private notes. Chatwoot does not send anything to the customer of an API inbox:
it posts each new message to the inbox's webhook_url, here /hooks/NAME, and an
agent's public answer arriving there becomes an outbound event that helpline's
channel connector delivers (chatwoot_hook.py says which deliveries count).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any, ClassVar, Literal

import aiohttp
import orjson
from aiohttp import web
from pydantic import BaseModel, Field, field_validator, model_validator

from gateway.attachments import NewAttachment
from gateway.backends.chatwoot_api import ChatwootApi
from gateway.backends.chatwoot_hook import AgentMessage, Refused, Scheme, agent_message, verify
from gateway.component import ComponentContext
from gateway.config_types import Secret
from gateway.delivery.component import HelpdeskBackend
from gateway.delivery.failures import DeliveryFailure, PermanentFailure
from gateway.delivery.http import JsonClient
from gateway.delivery.settings import DeliverySection
from gateway.delivery.tickets import TicketApi
from gateway.store.delivery import Ref
from gateway.units import Duration
from gateway.web.problems import problem

Status = Literal["open", "resolved", "pending", "snoozed"]


class ChatwootConfig(DeliverySection):
    # Chatwoot's base URL, e.g. "https://chat.example.com" (without /api/...).
    url: str
    account_id: int = Field(ge=1)
    # The API-channel inbox helpline's conversations go to.
    inbox_id: int = Field(ge=1)
    # An agent's or administrator's access token (Profile settings), not an agent bot's.
    token: Secret
    # Accept agent replies at POST /hooks/NAME.
    replies: bool = True
    # The API inbox's webhook secret (Chatwoot >= 4.13.0), or the account webhook's.
    webhook_secret: Secret | None = None
    # "timestamped": HMAC over "{ts}.{body}" (upstream); "body": HMAC over the body (forks).
    signature: Scheme = "timestamped"
    # For Chatwoot versions that do not sign: a token the webhook URL carries (?token=...).
    url_token: Secret | None = None
    # How far X-Chatwoot-Timestamp may be from now.
    tolerance: Duration = Field(default=300.0, gt=0)
    # helpline's own Chatwoot user id; found with GET /api/v1/profile when not given.
    api_user_id: int | None = Field(default=None, ge=1)
    # The conversation custom attribute holding helpline's conversation id.
    marker_attribute: str = Field(default="helpline_cid", pattern=r"^[a-z][a-z0-9_]{0,63}$")
    # The Chatwoot status a resolved (reopened) helpline conversation gets.
    resolve_status: Status = "resolved"
    reopen_status: Status = "open"

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the url must start with http:// or https://")
        value = value.rstrip("/")
        if "/api/" in value + "/":
            raise ValueError("give Chatwoot's base URL, without /api/v1/accounts/...")
        return value

    @model_validator(mode="after")
    def _reply_check(self) -> ChatwootConfig:
        if self.replies and self.webhook_secret is None and self.url_token is None:
            raise ValueError(
                "replies need webhook_secret (the API inbox's secret, Chatwoot >= 4.13.0) "
                "or, for versions that do not sign webhooks, url_token; "
                "or set replies = false"
            )
        return self


class ChatwootBackend(HelpdeskBackend):
    config_model: ClassVar[type[BaseModel]] = ChatwootConfig
    config: ChatwootConfig

    def __init__(self, name: str, config: ChatwootConfig) -> None:
        super().__init__(name, config)
        self._http: JsonClient | None = None
        self._files: aiohttp.ClientSession | None = None
        self._api: ChatwootApi | None = None
        origin = urllib.parse.urlsplit(config.url)
        self._origin = (origin.scheme, origin.netloc)
        if config.replies:
            self.hook = self._hook

    def make_api(self, ctx: ComponentContext) -> TicketApi:
        config = self.config
        self._http = JsonClient(
            f"{config.url}/api/v1/accounts/{config.account_id}",
            headers={"api_access_token": config.token.get_secret_value()},
            timeout=config.timeout,
        )
        self._files = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.timeout))
        self._api = ChatwootApi(
            self._http,
            self.handle,
            ctx.log,
            inbox_id=config.inbox_id,
            marker=config.marker_attribute,
            statuses={"resolved": config.resolve_status, "open": config.reopen_status},
            api_user_id=config.api_user_id,
        )
        return self._api

    async def check(self) -> str:
        """The inbox exists and is an API channel; who helpline's user is."""
        api = self._require_api()
        inbox = await api.inbox()
        channel = inbox.get("channel_type")
        if channel != "Channel::Api":
            raise PermanentFailure(
                f"inbox {self.config.inbox_id} is a {channel} inbox: helpline needs an "
                "API-channel inbox (incoming messages are only allowed there)"
            )
        if api.api_user_id is None:
            api.api_user_id = await api.profile(self.config.url)
        lock = "on" if inbox.get("lock_to_single_conversation") else "off"
        hook = inbox.get("webhook_url") or "none"
        user = api.api_user_id if api.api_user_id is not None else "unknown (marker only)"
        automatic = [k for k in ("greeting_enabled", "csat_survey_enabled") if inbox.get(k)]
        if automatic:
            # Chatwoot's own automatic messages are templates: helpline never delivers them.
            self.ctx.log.warning(
                "backend.inbox_automatic_messages",
                inbox=self.config.inbox_id,
                enabled=automatic,
                hint="the customer never sees these through helpline; turn them off",
            )
        if self.config.replies and hook == "none":
            self.ctx.log.warning(
                "backend.no_webhook_url",
                inbox=self.config.inbox_id,
                hint=f"set the inbox's webhook URL to helpline's /hooks/{self.name}",
            )
        return (
            f"inbox {inbox.get('id')} ({inbox.get('name')}), API user {user}, "
            f"lock_to_single_conversation {lock}, webhook_url {hook}"
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._files is not None:
            await self._files.close()

    def _require_api(self) -> ChatwootApi:
        if self._api is None:
            raise RuntimeError(f"backend {self.name} is not started")
        return self._api

    # -- agent replies ---------------------------------------------------------
    async def _hook(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        body = await request.read()
        config = self.config
        try:
            verify(
                request.headers,
                request.query,
                body,
                secret=config.webhook_secret.get_secret_value() if config.webhook_secret else None,
                scheme=config.signature,
                url_token=config.url_token.get_secret_value() if config.url_token else None,
                now=time.time(),
                tolerance=config.tolerance,
            )
        except Refused as err:
            return self.refused(str(err))
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return problem(400, "invalid-json", "Invalid JSON", "the webhook body is not JSON")
        delivery = request.headers.get("X-Chatwoot-Delivery")
        api = self._require_api()
        found = agent_message(
            payload,
            inbox_id=config.inbox_id,
            api_user_id=api.api_user_id,
            marker=config.marker_attribute,
        )
        if isinstance(found, str):
            self.ctx.log.debug("backend.hook_ignored", reason=found, delivery=delivery)
            return _answer({"status": "ignored", "reason": found})
        try:
            files = await self._download(found)
        except DeliveryFailure as err:
            # Not recorded: Chatwoot marks the message failed, so the agent sees it and can
            # send it again (versions that retry webhooks do so on this 502).
            self.ctx.log.warning("backend.reply_attachment_failed", error=str(err))
            return problem(502, "attachment-unavailable", "Attachment not fetched", str(err))
        try:
            ack = await self.agent_reply(
                await self._ticket_for_reply(found),
                text=found.text,
                key=f"message:{found.message_id}",
                author=found.author,
                attachments=files,
            )
        except DeliveryFailure as err:  # the conversation's create is not confirmed yet
            self.ctx.log.info("backend.reply_not_yet", error=str(err), delivery=delivery)
            return problem(503, "not-yet", "Not yet", str(err))
        if ack is None:
            return _answer({"status": "ignored", "reason": "not a helpline conversation"})
        return _answer({"status": "recorded", "event_id": ack.event_id, "duplicate": ack.duplicate})

    async def _ticket_for_reply(self, message: AgentMessage) -> str:
        """The ticket id helpline knows the answered conversation by. An agent can answer
        before helpline has the create's answer (lost, or late): the signed conversation's
        marker then completes the pending create, as a lookup would, so the reply is not
        lost (Chatwoot does not send it again). A second conversation carrying the same
        marker answers through the ticket helpline adopted."""
        ticket = message.ticket_id
        if message.marker is None or await self.handle.conversation_of_ticket(ticket):
            return ticket
        ref = await self.handle.ref("ticket", message.marker)
        if ref is None:
            return ticket  # not one of helpline's conversations: agent_reply ignores it
        if ref.state == "pending":
            await self.handle.put_ref(Ref("ticket", ref.local_id, ticket, "created", ref.event_id))
            self.ctx.log.info(
                "backend.ticket_adopted", conversation_id=ref.local_id, ticket=ticket, by="webhook"
            )
            return ticket
        return ref.remote_id or ticket

    async def _download(self, message: AgentMessage) -> list[NewAttachment]:
        """The agent's files, fetched from Chatwoot itself (never from another host the
        payload names), within the ingest size limit."""
        if not message.files:
            return []
        limit = self.ctx.replies.config.ingest.max_attachment_size
        fetched = []
        for name, url in message.files:
            parts = urllib.parse.urlsplit(url)
            if (parts.scheme, parts.netloc) != self._origin:
                self.ctx.log.warning("backend.attachment_foreign", url=url)
                continue
            data, ctype = await self._fetch(url, limit)
            if data is None:
                self.ctx.log.warning("backend.attachment_too_large", url=url, limit=limit)
                continue
            fetched.append(NewAttachment(filename=name, declared_type=ctype, data=data))
        return fetched

    async def _fetch(self, url: str, limit: int) -> tuple[bytes | None, str]:
        if self._files is None:
            raise PermanentFailure("the backend is not started")
        # No token: the blob URL is signed, and it redirects to the storage service.
        try:
            async with self._files.get(url) as answer:
                if answer.status != 200:
                    raise PermanentFailure(f"GET {url}: HTTP {answer.status}", status=answer.status)
                ctype = answer.headers.get("Content-Type", "application/octet-stream")
                data = bytearray()
                async for chunk in answer.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > limit:
                        return None, ctype
                return bytes(data), ctype.split(";")[0].strip()
        except (TimeoutError, aiohttp.ClientError) as err:
            raise PermanentFailure(f"GET {url}: {type(err).__name__} {err}") from err


def _answer(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
