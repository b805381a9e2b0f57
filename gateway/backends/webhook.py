"""The `webhook` backend: each event POSTed to a URL, signed by Standard Webhooks.

The body is the stream's CloudEvent as it is (with its offset), so a consumer
reads the same JSON here as from GET /v1/stream; webhook-id is the event id,
unchanged across retries, so the consumer can drop a repeat. The same secret
signs replies coming back at POST /hooks/NAME, where webhook-id is kept
durably (helpline's idempotency table) so a repeated delivery is answered,
never applied twice.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
import nh3
import orjson
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError, field_validator

from gateway.backends.standard_webhooks import SignatureError, headers_for, secret_key, verify
from gateway.component import ComponentContext, ComponentState, Health
from gateway.config_types import Secret
from gateway.dedup import IdempotencyKey, digest_of
from gateway.delivery.engine import Attempt, DeliveryEngine, StreamEvent
from gateway.delivery.failures import TemporaryFailure, classify
from gateway.delivery.settings import DeliverySection
from gateway.errors import InvalidInput
from gateway.events import Author
from gateway.replies import Reply
from gateway.units import Duration
from gateway.web.problems import problem, validation_problem

USER_AGENT = "helpline-webhook/1"


class WebhookConfig(DeliverySection):
    url: str
    secret: Secret  # whsec_ + base64 of 24..64 random bytes
    # Older secrets still signed with during a rotation (each attempt carries every signature).
    previous_secrets: list[Secret] = Field(default_factory=list)
    # Event types sent (shell patterns); the default is every event.
    types: list[str] = Field(default_factory=lambda: ["*"])
    # Accept agent replies signed with the same secret at POST /hooks/NAME.
    replies: bool = True
    # How far a reply's webhook-timestamp may be from now.
    tolerance: Duration = Field(default=300.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the url must start with http:// or https://")
        return value

    @field_validator("secret", "previous_secrets")
    @classmethod
    def _whsec(cls, value: Any) -> Any:
        for secret in value if isinstance(value, list) else [value]:
            secret_key(secret.get_secret_value())
        return value


class InboundReply(BaseModel):
    """What a system posts to /hooks/NAME to answer a customer through helpline."""

    model_config = {"extra": "forbid"}

    conversation_id: str
    text: str = Field(min_length=1)
    html: str | None = None
    internal: bool = False
    author: str | None = None


class WebhookBackend:
    config_model: ClassVar[type[BaseModel]] = WebhookConfig

    def __init__(self, name: str, config: WebhookConfig) -> None:
        self.name = name
        self.config = config
        self._keys = [
            secret_key(s.get_secret_value()) for s in [config.secret, *config.previous_secrets]
        ]
        self._http: aiohttp.ClientSession | None = None
        self._engine: DeliveryEngine | None = None
        self._ctx: ComponentContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._since = time.time()
        self._replies_taken = 0
        self._replies_refused = 0

    async def start(self, ctx: ComponentContext) -> None:
        if ctx.backend is None:
            raise RuntimeError("the webhook backend runs as a [backends.NAME] section")
        self._ctx = ctx
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        self._http = aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": USER_AGENT}, raise_for_status=False
        )
        self._engine = ctx.backend.engine(self, self.config, ctx.log)
        self._task = ctx.create_task(self._engine.run(), "deliver")
        if self.config.replies:
            ctx.add_route(f"/hooks/{self.name}", self._hook)

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.drain(min(self.config.timeout, 10.0))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._ctx is not None and self._ctx.backend is not None:
            self._ctx.backend.detach()
        if self._http is not None:
            await self._http.close()

    def health(self) -> Health:
        if self._engine is None:
            return Health(ComponentState.NOT_STARTED, _at(self._since))
        stats = self._engine.stats
        counters = {
            **self._engine.counters(),
            "replies": self._replies_taken,
            "replies_refused": self._replies_refused,
        }
        return Health(stats.state, _at(self._since), stats.last_error, counters)

    # -- outbound ----------------------------------------------------------
    def wants(self, event: StreamEvent) -> bool:
        return any(fnmatch.fnmatchcase(event.type, p) for p in self.config.types)

    async def deliver(self, event: StreamEvent, attempt: Attempt) -> None:
        if self._http is None:
            raise TemporaryFailure("the backend is not started")
        headers = headers_for(self._keys, event.id, int(time.time()), event.body)
        try:
            async with self._http.post(
                self.config.url, data=event.body, headers=headers, allow_redirects=False
            ) as answer:
                detail = (await answer.text(errors="replace"))[:300] if answer.status >= 300 else ""
                failure = classify(answer.status, answer.headers, detail)
        except aiohttp.ClientConnectorError as err:
            raise TemporaryFailure(
                f"cannot connect to {self.config.url}: {err}", reachable=False
            ) from err
        except (TimeoutError, aiohttp.ClientError) as err:
            # The consumer may have taken it: it de-duplicates on webhook-id.
            raise TemporaryFailure(
                f"no answer from {self.config.url}: {type(err).__name__} {err}", ambiguous=True
            ) from err
        if failure is not None:
            raise failure

    # -- inbound replies ---------------------------------------------------
    async def _hook(self, request: web.Request) -> web.StreamResponse:
        if self._ctx is None:
            raise web.HTTPServiceUnavailable(reason="the backend is not started")
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        body = await request.read()
        try:
            webhook_id = verify(
                self._keys,
                request.headers,
                body,
                now=time.time(),
                tolerance=self.config.tolerance,
            )
        except SignatureError as err:
            self._replies_refused += 1
            self._ctx.log.warning("backend.hook_refused", reason=str(err))
            return problem(401, "bad-signature", "Signature refused", str(err))
        try:
            reply = InboundReply.model_validate_json(body)
        except ValidationError as err:
            return validation_problem(err)
        if not reply.text.strip():
            raise InvalidInput("text", "a reply needs text")
        limit = self._ctx.replies.config.ingest.max_text_size
        for field, value in (("text", reply.text), ("html", reply.html)):
            if value and len(value.encode()) > limit:
                raise InvalidInput(field, f"longer than [ingest] max_text_size ({limit} bytes)")
        ack = await self._ctx.replies.record(
            Reply(
                conversation_id=reply.conversation_id,
                source=f"/backends/{self.name}",
                text=reply.text,
                html=nh3.clean(reply.html) if reply.html else None,
                internal=reply.internal,
                author=Author(kind="human", name=reply.author),
                idempotency=IdempotencyKey(
                    f"hook:{self.name}", webhook_id, digest_of(body), f"webhook-id {webhook_id}"
                ),
            )
        )
        if not ack.duplicate:
            self._replies_taken += 1
        self._ctx.log.info(
            "backend.reply_received",
            conversation_id=ack.conversation_id,
            event_id=ack.event_id,
            webhook_id=webhook_id,
            duplicate=ack.duplicate,
        )
        return web.Response(body=orjson.dumps(ack.as_json()), content_type="application/json")


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
