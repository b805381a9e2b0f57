"""The `smtp_out` connector type: an agent's public reply goes to the customer by mail.

It follows the stream from its own durable cursor and sends each public reply
on an email conversation through the configured relay (aiosmtplib), from the
support address the customer wrote to, with In-Reply-To and References, the
conversation's ticket token in the subject, text and HTML alternatives, and a
Message-ID derived from the reply's event id. That Message-ID is registered
before sending, so the customer's answer threads back even if it comes at
once, and a resend after a crash carries the same id. Temporary failures
retry with capped backoff (the component shows as degraded meanwhile); a
permanent refusal becomes a delivery_failed event on the conversation.
Internal notes are never sent. With `auto_ack`, a conversation a customer's
email opens gets one automatic acknowledgement (acks.py), recorded in the
stream first and then sent like a reply.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, ClassVar, Literal

import aiosmtplib
import orjson
from pydantic import Field, field_validator, model_validator

from connectors.mail.acks import (
    DEFAULT_SUBJECT,
    DEFAULT_TEXT,
    acknowledgement_for,
    base_subject,
    check_template,
    render,
)
from connectors.mail.oauth import OAuthConfig, OAuthError, TokenSource, xoauth2
from gateway.component import ComponentContext, ComponentState, Health
from gateway.config_types import Listen, Secret, Section
from gateway.events import EventType
from gateway.units import Duration

BATCH = 100
WAIT = 30.0


class SmtpOutConfig(Section):
    relay: Listen  # "HOST:PORT" of the MTA or provider that sends helpline's mail
    security: Literal["none", "starttls", "tls"] = "starttls"
    verify_certificate: bool = True
    username: str = ""
    password: Secret | None = None
    # "password" (AUTH PLAIN/LOGIN when username is set), or "xoauth2" with an oauth table.
    auth: Literal["password", "xoauth2"] = "password"
    oauth: OAuthConfig | None = None
    # The sender when a conversation names no support address (it started elsewhere).
    from_address: str = ""
    # The domain of the Message-IDs helpline makes; empty: this machine's name.
    message_id_domain: str = ""
    # A new component sends the replies recorded from now on, not years of history.
    start: Literal["now", "beginning"] = "now"
    timeout: Duration = 30.0
    retry_cap: Duration = Field(default=300.0, ge=1.0)
    # One automatic acknowledgement to a conversation opened by a customer's email.
    auto_ack: bool = False
    # Its subject and text; {ticket} is the ticket token, {subject} the customer's subject.
    auto_ack_subject: str = DEFAULT_SUBJECT
    auto_ack_text: str = DEFAULT_TEXT
    # At most one acknowledgement per customer address within this window.
    auto_ack_window: Duration = Field(default=86400.0, gt=0)

    @field_validator("auto_ack_subject")
    @classmethod
    def _subject_names_the_ticket(cls, value: str) -> str:
        return check_template(value, required=("ticket",))

    @field_validator("auto_ack_text")
    @classmethod
    def _text_formats(cls, value: str) -> str:
        return check_template(value)

    @model_validator(mode="after")
    def _oauth(self) -> SmtpOutConfig:
        if self.auth == "xoauth2" and (self.oauth is None or not self.username):
            raise ValueError("auth = 'xoauth2' needs username and an [oauth] table")
        return self


@dataclass(slots=True)
class Thread:
    """What a reply needs to know of its conversation."""

    number: int = 0
    customer: str | None = None
    support: str | None = None
    subject: str | None = None
    message_ids: list[str] = field(default_factory=list)


def thread_of(events: list[bytes], domain: str) -> Thread:
    thread = Thread()
    for body in events:
        event = orjson.loads(body)
        data = event["data"]
        thread.number = data.get("conversation_number", thread.number)
        if event["type"] == EventType.MESSAGE_INBOUND and data["channel"] == "email":
            thread.customer = data["from"]["email"] or thread.customer
            thread.support = (data.get("recipients") or [thread.support])[0]
            thread.subject = thread.subject or data.get("subject")
            if data.get("message_id"):
                thread.message_ids.append(data["message_id"])
        elif event["type"] == EventType.MESSAGE_OUTBOUND and not data["internal"]:
            thread.message_ids.append(message_id_for(event["id"], domain))
    return thread


def message_id_for(event_id: str, domain: str) -> str:
    return f"{event_id}@{domain}"


def compose(
    reply: dict[str, Any],
    thread: Thread,
    *,
    sender: str,
    domain: str,
    token: str,
    ack_subject: str = DEFAULT_SUBJECT,
    files: Sequence[tuple[str, str, bytes]] = (),
) -> EmailMessage:
    data = reply["data"]
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = thread.customer or ""
    ticket = token.format(number=thread.number)
    if data.get("auto_ack"):
        msg["Subject"] = render(ack_subject, subject=thread.subject, ticket=ticket)
        # RFC 3834: automatic, so responders do not answer it; Exchange's own flag too.
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    else:
        msg["Subject"] = f"Re: {base_subject(thread.subject, ticket)} {ticket}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{message_id_for(reply['id'], domain)}>"
    earlier = [m for m in thread.message_ids if m != message_id_for(reply["id"], domain)]
    if earlier:
        msg["In-Reply-To"] = f"<{earlier[-1]}>"
        msg["References"] = " ".join(f"<{m}>" for m in earlier[-20:])
    msg["X-Helpline-Conversation"] = data["conversation_id"]
    msg.set_content(data["text"])
    if data.get("html"):
        msg.add_alternative(data["html"], subtype="html")
    for filename, content_type, content in files:
        maintype, _, subtype = content_type.partition("/")
        if maintype == "text":  # set_content wants str for text parts
            msg.add_attachment(
                content.decode("utf-8", "replace"), subtype=subtype or "plain", filename=filename
            )
        else:
            msg.add_attachment(
                content, maintype=maintype, subtype=subtype or "octet-stream", filename=filename
            )
    return msg


class SmtpOutConnector:
    config_model: ClassVar[type[SmtpOutConfig]] = SmtpOutConfig
    is_listener: ClassVar[bool] = False

    def __init__(self, name: str, config: SmtpOutConfig) -> None:
        self.name = name
        self.config = config
        self._tokens = (
            TokenSource(config.oauth) if config.auth == "xoauth2" and config.oauth else None
        )
        self._state = ComponentState.RUNNING
        self._since = datetime.now(UTC)
        self._error: str | None = None
        self.sent = 0
        self.failed = 0
        self.acknowledged = 0
        self._domain = config.message_id_domain or socket.getfqdn()

    @property
    def key(self) -> str:
        return f"connectors.{self.name}"

    async def start(self, ctx: ComponentContext) -> None:
        ctx.create_task(self._run(ctx), "send")

    async def stop(self) -> None:
        """The send task is owned (and cancelled) by the supervisor; its cursor is durable."""

    def health(self) -> Health:
        counters = {"sent": self.sent, "failed": self.failed, "acknowledged": self.acknowledged}
        return Health(self._state, self._since, self._error, counters)

    def _set(self, state: ComponentState, error: str | None) -> None:
        if state is not self._state:
            self._since = datetime.now(UTC)
        self._state, self._error = state, error

    async def _run(self, ctx: ComponentContext) -> None:
        after = await ctx.stream.cursor(self.key)
        if after is None:
            after = ctx.stream.head if self.config.start == "now" else 0
            await ctx.stream.save_cursor(self.key, after)
        while True:
            rows = await ctx.stream.read(after, BATCH)
            if not rows:
                await ctx.stream.wait(after, WAIT)
                continue
            for offset, body in rows:
                event = orjson.loads(body)
                data = event["data"]
                if (
                    event["type"] == EventType.MESSAGE_OUTBOUND
                    and data["channel"] == "email"
                    and not data["internal"]
                ):
                    await self._deliver(ctx, event)
                    await ctx.stream.save_cursor(self.key, offset)
                elif (
                    self.config.auto_ack
                    and event["type"] == EventType.MESSAGE_INBOUND
                    and data["channel"] == "email"
                ):
                    await self._acknowledge(ctx, event)
                after = offset
            await ctx.stream.save_cursor(self.key, after)

    async def _acknowledge(self, ctx: ComponentContext, inbound: dict[str, Any]) -> None:
        """Record an acknowledgement for a new conversation; this loop sends it when it
        reaches that event, like a reply (so a crash in between sends it once all the same)."""
        conversation = inbound["data"]["conversation_id"]
        events = [orjson.loads(b) for b in await ctx.stream.conversation(conversation)]
        number = inbound["data"]["conversation_number"]
        ack, why = acknowledgement_for(
            inbound,
            events,
            own={self.config.from_address.lower()} - {""},
            text=self.config.auto_ack_text,
            window=self.config.auto_ack_window,
            source=f"/connectors/{self.name}",
            ticket=ctx.ingest.config.conversations.ticket_token.format(number=number),
        )
        if ack is None:
            ctx.log.debug("mail.auto_ack_skipped", conversation_id=conversation, reason=why)
            return
        done = await ctx.replies.acknowledge(ack)
        if done.event_id is None:
            ctx.log.info("mail.auto_ack_skipped", conversation_id=conversation, reason=done.skipped)
            return
        self.acknowledged += 1
        ctx.log.info("mail.auto_ack_recorded", conversation_id=conversation, event_id=done.event_id)

    async def _deliver(self, ctx: ComponentContext, reply: dict[str, Any]) -> None:
        conversation = reply["data"]["conversation_id"]
        thread = thread_of(await ctx.stream.conversation(conversation), self._domain)
        sender = thread.support or self.config.from_address
        source = f"/connectors/{self.name}"
        if not thread.customer or not sender:
            reason = "no customer email address" if not thread.customer else "no sender address"
            await ctx.replies.delivery_failed(reply["id"], conversation, None, reason, source)
            self.failed += 1
            return
        token = ctx.ingest.config.conversations.ticket_token
        files = []
        for att in reply["data"].get("attachments") or []:
            found = await ctx.stream.attachment(att["id"]) if att.get("id") else None
            if found is not None:
                files.append((att.get("filename") or "attachment", found[0], found[1]))
        msg = compose(
            reply,
            thread,
            sender=sender,
            domain=self._domain,
            token=token,
            ack_subject=self.config.auto_ack_subject,
            files=files,
        )
        await ctx.replies.add_reference(
            conversation, "email", message_id_for(reply["id"], self._domain)
        )
        delay = 1.0
        while True:
            try:
                await self._send(msg, sender, thread.customer)
            except aiosmtplib.SMTPAuthenticationError as err:
                # helpline's own credentials, not the customer's address: retry, never fail it.
                if self._tokens is not None:
                    self._tokens.forget()
                self._retrying(ctx, f"relay refused the login: {err.code} {err.message}", delay)
            except OAuthError as err:
                self._retrying(ctx, str(err), delay)
            except aiosmtplib.SMTPResponseException as err:
                if err.code >= 500:
                    await ctx.replies.delivery_failed(
                        reply["id"],
                        conversation,
                        thread.customer,
                        f"{err.code} {err.message}",
                        source,
                    )
                    self.failed += 1
                    return
                self._retrying(ctx, f"{err.code} {err.message}", delay)
            except aiosmtplib.SMTPRecipientsRefused as err:
                reason = "; ".join(f"{r.code} {r.message}" for r in err.recipients)
                if all(r.code >= 500 for r in err.recipients):
                    await ctx.replies.delivery_failed(
                        reply["id"],
                        conversation,
                        thread.customer,
                        reason,
                        source,
                        address_failed=True,  # refused at RCPT: the address itself
                    )
                    self.failed += 1
                    return
                self._retrying(ctx, reason, delay)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
                self._retrying(ctx, f"{type(err).__name__}: {err}", delay)
            else:
                self.sent += 1
                self._set(ComponentState.RUNNING, None)
                ctx.log.info("mail.sent", event_id=reply["id"], conversation_id=conversation)
                return
            await asyncio.sleep(delay)
            delay = min(self.config.retry_cap, delay * 2)

    def _retrying(self, ctx: ComponentContext, error: str, delay: float) -> None:
        if self._state is not ComponentState.DEGRADED:
            ctx.log.warning("mail.send_failed", error=error, retry_in=delay)
        self._set(ComponentState.DEGRADED, error)

    async def _send(self, msg: EmailMessage, sender: str, recipient: str) -> None:
        cfg = self.config
        context = ssl.create_default_context()
        if not cfg.verify_certificate:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        client = aiosmtplib.SMTP(
            hostname=cfg.relay.host,
            port=cfg.relay.port,
            username=None if self._tokens else cfg.username or None,
            password=cfg.password.get_secret_value() if cfg.password and not self._tokens else None,
            use_tls=cfg.security == "tls",
            start_tls=cfg.security == "starttls",
            tls_context=context,
            timeout=cfg.timeout,
        )
        async with client:
            if self._tokens is not None:
                await self._xoauth2(client, await self._tokens.token())
            await client.send_message(msg, sender=sender, recipients=[recipient])

    async def _xoauth2(self, client: aiosmtplib.SMTP, token: str) -> None:
        await client.ehlo()
        answer = await client.execute_command(
            b"AUTH", b"XOAUTH2", xoauth2(self.config.username, token).encode()
        )
        if answer.code == 334:  # the error details as a challenge; an empty line ends it
            answer = await client.execute_command(b"")
        if answer.code != 235:
            raise aiosmtplib.SMTPAuthenticationError(answer.code, answer.message)
