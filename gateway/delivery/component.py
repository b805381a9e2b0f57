"""The lifecycle every helpdesk backend shares: engine, replies route or poller, health.

A helpdesk module subclasses `HelpdeskBackend` and provides its API client
(`TicketApi`), and either a webhook handler (`hook`) for agent replies, or a
poll loop (`poll`) where the helpdesk has no webhook (Request Tracker). Start
never waits for the helpdesk: reaching it is what health reports (a helpdesk
that is down must not hold up the daemon), and `check()` runs in the
background until it has succeeded once.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import nh3
from aiohttp import web
from pydantic import BaseModel

from gateway.attachments import NewAttachment
from gateway.component import ComponentContext, ComponentState, Health
from gateway.dedup import IdempotencyKey, digest_of
from gateway.delivery.board import BackendHandle
from gateway.delivery.engine import DeliveryEngine
from gateway.delivery.failures import DeliveryFailure, TemporaryFailure
from gateway.delivery.settings import DeliverySection
from gateway.delivery.tickets import TicketApi, TicketSink
from gateway.errors import NotFound
from gateway.events import Author
from gateway.replies import Reply, ReplyAck

CHECK_RETRY = 30.0


class HelpdeskBackend(abc.ABC):
    """Base of the helpdesk backends; subclasses set `config_model` and the hooks below."""

    config_model: ClassVar[type[BaseModel]] = DeliverySection

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config
        self.source = f"/backends/{name}"
        self._ctx: ComponentContext | None = None
        self._engine: DeliveryEngine | None = None
        self._sink: TicketSink | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._since = time.time()
        self.checked: str | None = None  # what check() found, once it succeeded
        self.check_error: str | None = None  # why the start-up check failed, until it works
        self.replies_taken = 0
        self.replies_refused = 0

    # -- for subclasses ----------------------------------------------------
    @abc.abstractmethod
    def make_api(self, ctx: ComponentContext) -> TicketApi:
        """The helpdesk's API client, built at start (the engine delivers through it)."""

    async def check(self) -> str:
        """Reach the helpdesk once (who am I, does the custom field exist); a summary."""
        return "not checked"

    async def close(self) -> None:  # noqa: B027 - optional: a backend with a client closes it
        """Release the API client."""

    hook: Any = None  # async (request) -> response, served at /hooks/NAME when set
    poll: Any = None  # async () -> None, run until stopped, for helpdesks without webhooks

    # -- lifecycle ---------------------------------------------------------
    @property
    def ctx(self) -> ComponentContext:
        if self._ctx is None:
            raise RuntimeError(f"backend {self.name} is not started")
        return self._ctx

    @property
    def handle(self) -> BackendHandle:
        handle = self.ctx.backend
        if handle is None:
            raise RuntimeError(f"{self.name} runs as a [backends.NAME] section")
        return handle

    async def start(self, ctx: ComponentContext) -> None:
        self._ctx = ctx
        api = self.make_api(ctx)
        self._sink = TicketSink(api, self.handle, ctx.log)
        self._engine = self.handle.engine(self._sink, self.config, ctx.log)
        self._tasks.append(ctx.create_task(self._engine.run(), "deliver"))
        self._tasks.append(ctx.create_task(self._check_until_ok(), "check"))
        if self.hook is not None:
            ctx.add_route(f"/hooks/{self.name}", self.hook)
        if self.poll is not None:
            self._tasks.append(ctx.create_task(self.poll(), "poll"))

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.drain(min(float(self.config.timeout), 10.0))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ctx is not None and self._ctx.backend is not None:
            self._ctx.backend.detach()
        await self.close()

    def health(self) -> Health:
        since = datetime.fromtimestamp(self._since, UTC)
        if self._engine is None or self._sink is None:
            return Health(ComponentState.NOT_STARTED, since)
        stats = self._engine.stats
        counters = {
            **self._engine.counters(),
            "tickets_adopted": self._sink.adopted,
            "several_tickets": self._sink.duplicates,
            "replies": self.replies_taken,
            "replies_refused": self.replies_refused,
        }
        state, error = stats.state, stats.last_error
        if self.check_error is not None and state is ComponentState.RUNNING:
            state, error = ComponentState.DEGRADED, self.check_error
        return Health(state, since, error, counters)

    async def _check_until_ok(self) -> None:
        while True:
            try:
                self.checked = await self.check()
            except DeliveryFailure as err:
                self.ctx.log.warning("backend.check_failed", error=str(err), retry_in=CHECK_RETRY)
                self.check_error = f"start-up check: {err}"
                await asyncio.sleep(CHECK_RETRY)
                continue
            self.check_error = None
            self.ctx.log.info("backend.checked", summary=self.checked)
            return

    # -- agent replies coming back -------------------------------------------
    async def agent_reply(
        self,
        ticket_id: str,
        *,
        text: str,
        key: str,
        author: str | None = None,
        html: str | None = None,
        internal: bool = False,
        attachments: Sequence[NewAttachment] = (),
    ) -> ReplyAck | None:
        """Record an agent's answer made in the helpdesk as an outbound event of the
        ticket's conversation (its channel connector then sends it); None when the ticket
        is not one of helpline's. `key` is the helpdesk's own id for the comment, so a
        repeated webhook or poll records it once. Raises TemporaryFailure while a create's
        answer is outstanding and the ticket is unknown: the caller answers 503 (the
        vendor retries) or polls again."""
        conversation = await self.handle.conversation_of_ticket(ticket_id)
        if conversation is None:
            if await self.handle.creates_unanswered():
                # It may be the ticket whose create has not been answered yet.
                raise TemporaryFailure(f"ticket {ticket_id} is not mapped yet; retry")
            self.ctx.log.info("backend.reply_ignored", ticket=ticket_id, reason="not our ticket")
            return None
        digest = digest_of(ticket_id.encode(), text.encode(), (html or "").encode())
        try:
            ack = await self.ctx.replies.record(
                Reply(
                    conversation_id=conversation,
                    source=self.source,
                    text=text,
                    html=nh3.clean(html) if html else None,  # a helpdesk's HTML, made safe
                    internal=internal,
                    author=Author(kind="human", name=author),
                    idempotency=IdempotencyKey(f"backend:{self.name}", key, digest, key),
                    attachments=tuple(attachments),
                )
            )
        except NotFound:
            return None
        if not ack.duplicate:
            self.replies_taken += 1
        self.ctx.log.info(
            "backend.reply_received",
            conversation_id=ack.conversation_id,
            event_id=ack.event_id,
            ticket=ticket_id,
            key=key,
            duplicate=ack.duplicate,
        )
        return ack

    def refused(self, reason: str) -> web.Response:
        """A webhook refused for its signature, timestamp or secret: logged and counted."""
        from gateway.web.problems import problem

        self.replies_refused += 1
        self.ctx.log.warning("backend.hook_refused", reason=reason)
        return problem(401, "bad-signature", "Webhook refused", reason)
