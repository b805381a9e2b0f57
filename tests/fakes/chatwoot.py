"""A faithful local fake of Chatwoot's Application API with an API-channel inbox.

Reference: backends.md section 7. One account (id `account_id`), an API-channel inbox
(`api_inbox_id`) and a website inbox (`web_inbox_id`, where `incoming` messages are refused),
a user token (an administrator: helpline's API user), an agent-bot token, and an agent who
replies through `agent_reply`. This module holds the records, the state operations and the
test-facing API; the HTTP handlers (under `/api/v1/accounts/{account_id}`) are in
chatwoot_routes.py, the JSON shapes and the webhook emitter in chatwoot_hooks.py. Ids are
counters; times come from `clock`.

Switches for the ◐ points of the reference, each with the documented default:
- `require_contact_inbox_id`: the swagger requires `inbox_id` on contact create; the controller
  itself accepts its absence (no contact_inbox, `contact_inbox.source_id` null).
- `require_conversation_source_id`: the swagger requires `source_id` on conversation create; with
  `contact_id` + `inbox_id` the builder would generate a UUID for an API inbox.
- `honour_message_source_id`: whether message create keeps `source_id` (current builders ◐);
  False models a version that drops it (null).
- `expose_contact_inbox`: newer conversation JSON carries `meta.contact_inbox` (◐ not in all).
- `webhook_signing`, `webhook_attempts`: see chatwoot_hooks.py.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.fakes.chatwoot_hooks import (
    MESSAGE_TYPES,
    Attempt,
    Delivery,
    Emitter,
    Render,
    Signing,
    new_delivery,
)
from tests.fakes.harness import FakeService, Status

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
E164 = re.compile(r"\A\+[1-9]\d{1,14}\Z")
STATUSES = ("open", "resolved", "pending", "snoozed")
SIGN_IN = {"errors": ["You need to sign in or sign up before continuing."]}
NOT_FOUND = {"error": "Resource could not be found"}


@dataclass
class Inbox:
    id: int
    name: str
    channel_type: str  # "Channel::Api" | "Channel::WebWidget"
    lock_to_single_conversation: bool = False
    webhook_url: str | None = None
    secret: str | None = None  # API channel's webhook signing secret (>= 4.13.0)
    hmac_token: str = ""


@dataclass
class Contact:
    id: int
    name: str
    email: str | None = None
    phone_number: str | None = None
    identifier: str | None = None
    custom_attributes: dict[str, Any] = field(default_factory=dict)
    additional_attributes: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass
class ContactInbox:
    id: int
    contact_id: int
    inbox_id: int
    source_id: str
    created_at: float = 0.0


@dataclass
class Conversation:
    id: int  # the display_id: what every REST path and payload calls `id`
    inbox_id: int
    contact_id: int
    contact_inbox_id: int
    status: str = "open"
    custom_attributes: dict[str, Any] = field(default_factory=dict)
    additional_attributes: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    last_activity_at: float = 0.0
    uuid: str = ""


@dataclass
class Attachment:
    id: int
    message_id: int
    filename: str
    content_type: str
    data: bytes


@dataclass
class Message:
    id: int
    conversation_id: int
    inbox_id: int
    content: str | None
    message_type: int  # 0 incoming, 1 outgoing, 2 activity, 3 template
    private: bool
    sender_type: str  # "User" | "Contact" | "AgentBot"
    sender_id: int
    content_type: str = "text"
    content_attributes: dict[str, Any] = field(default_factory=dict)
    source_id: str | None = None
    echo_id: str | None = None
    status: str = "sent"
    created_at: float = 0.0
    attachments: list[Attachment] = field(default_factory=list)


@dataclass
class User:
    id: int
    name: str
    email: str
    role: str = "agent"


@dataclass
class Webhook:
    id: int
    url: str
    name: str | None
    subscriptions: list[str]
    secret: str
    inbox_id: int | None = None


EVENTS = (
    "conversation_created",
    "conversation_status_changed",
    "conversation_updated",
    "message_created",
    "message_updated",
    "contact_created",
    "contact_updated",
    "webwidget_triggered",
    "conversation_typing_on",
    "conversation_typing_off",
)


class Invalid(Exception):
    """A record that fails validation: answered as 422 {"message", "attributes"}."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__(", ".join(m for _, m in errors))
        self.errors = errors


class Answer(Exception):
    """Stop the handler and answer `status` with `body` (a JSON value or plain text)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class FakeChatwoot(FakeService, Render):
    """Chatwoot's Application API (one account) + webhooks, in memory, on its own thread."""

    def __init__(
        self,
        *,
        account_id: int = 1,
        account_name: str = "Helpline Test",
        token: str = "cw-user-token",
        bot_token: str = "cw-bot-token",
        lock_to_single_conversation: bool = False,
        require_contact_inbox_id: bool = True,
        require_conversation_source_id: bool = True,
        honour_message_source_id: bool = True,
        expose_contact_inbox: bool = True,
        webhook_signing: Signing = "signed",
        webhook_attempts: int = 1,
        time_scale: float = 1.0,
        webhook_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.account_id = account_id
        self.account_name = account_name
        self.require_contact_inbox_id = require_contact_inbox_id
        self.require_conversation_source_id = require_conversation_source_id
        self.honour_message_source_id = honour_message_source_id
        self.expose_contact_inbox = expose_contact_inbox
        self._ids: dict[str, int] = {}
        self.inboxes: dict[int, Inbox] = {}
        self.contacts_by_id: dict[int, Contact] = {}
        self.contact_inboxes: dict[int, ContactInbox] = {}
        self.conversations_by_id: dict[int, Conversation] = {}
        self.messages_by_id: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.webhooks: dict[int, Webhook] = {}
        self.users: dict[int, User] = {}
        self.bots: dict[int, str] = {}
        self.api_user_id = self.add_user("Helpline API", "helpline@example.test", "administrator")
        self.agent_id = self.add_user("Agent Smith", "smith@example.test")
        bot_id = self._next("bot")
        self.bots[bot_id] = "Helpline Bot"
        self.tokens: dict[str, tuple[str, int]] = {
            token: ("User", self.api_user_id),
            bot_token: ("AgentBot", bot_id),
        }
        self.api_inbox_id = self.add_inbox("Helpline", "Channel::Api", lock_to_single_conversation)
        self.web_inbox_id = self.add_inbox("Website", "Channel::WebWidget")
        self.emitter = Emitter(
            self,
            signing=webhook_signing,
            attempts=webhook_attempts,
            retry_wait=3.0 * time_scale,
            timeout=webhook_timeout,
        )

    def __enter__(self) -> FakeChatwoot:
        self.start()
        return self

    # -- setup helpers (tests) ---------------------------------------------
    def _next(self, kind: str) -> int:
        with self.lock:
            self._ids[kind] = self._ids.get(kind, 0) + 1
            return self._ids[kind]

    def add_user(self, name: str, email: str, role: str = "agent") -> int:
        """Another agent (for `agent_reply(author=...)`); returns its user id."""
        user = User(self._next("user"), name, email, role)
        with self.lock:
            self.users[user.id] = user
        return user.id

    def add_inbox(self, name: str, channel_type: str, lock: bool = False) -> int:
        inbox_id = self._next("inbox")
        with self.lock:
            self.inboxes[inbox_id] = Inbox(
                inbox_id,
                name,
                channel_type,
                lock,
                secret=f"cw-inbox-secret-{inbox_id}" if channel_type == "Channel::Api" else None,
                hmac_token=f"cw-hmac-token-{inbox_id}",
            )
        return inbox_id

    def set_lock_to_single_conversation(self, on: bool, inbox_id: int | None = None) -> None:
        with self.lock:
            self.inboxes[inbox_id or self.api_inbox_id].lock_to_single_conversation = on

    def set_webhook(
        self,
        url: str,
        *,
        secret: str | None = None,
        kind: Literal["api_inbox", "account"] = "api_inbox",
        subscriptions: list[str] | None = None,
    ) -> str:
        """Point the API inbox's webhook_url (or a new account webhook) at `url`; returns the
        signing secret (generated when not given)."""
        with self.lock:
            if kind == "api_inbox":
                inbox = self.inboxes[self.api_inbox_id]
                inbox.webhook_url = url
                inbox.secret = secret or inbox.secret or f"cw-inbox-secret-{inbox.id}"
                return inbox.secret
            hook_id = self._next("webhook")
            hook = Webhook(
                hook_id,
                url,
                "helpline",
                list(subscriptions or ["message_created"]),
                secret or f"cw-webhook-secret-{hook_id}",
            )
            self.webhooks[hook.id] = hook
            return hook.secret

    def throttle(self, n_requests: int, retry_after: float | None = None) -> None:
        """Rack::Attack: the next n requests answer 429 "Retry later" (text/plain); Retry-After
        only when the operator configured it (◐ not by default)."""
        headers = {"Content-Type": "text/plain"}
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after))
        self.arm(Status(429, "Retry later\n", headers), times=n_requests)

    # -- accessors (tests) -------------------------------------------------
    def contacts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.contact_json(c) for c in self.contacts_by_id.values()]

    def contact_by_identifier(self, identifier: str) -> dict[str, Any] | None:
        with self.lock:
            found = [c for c in self.contacts_by_id.values() if c.identifier == identifier]
            return self.contact_json(found[0]) if found else None

    def tickets(self) -> list[dict[str, Any]]:
        """Every conversation, flat: id, inbox_id, contact_id, source_id, status, attributes."""
        with self.lock:
            return [self._flat(c) for c in self.conversations_by_id.values()]

    conversations = tickets

    def tickets_by_source_id(self, source_id: str) -> list[dict[str, Any]]:
        """Conversations whose contact_inbox source_id is helpline's marker (`hl_conv_<id>`)."""
        return [t for t in self.tickets() if t["source_id"] == source_id]

    def tickets_by_attribute(self, key: str, value: Any) -> list[dict[str, Any]]:
        return [t for t in self.tickets() if t["custom_attributes"].get(key) == value]

    def messages(self, conversation_id: int) -> list[dict[str, Any]]:
        """A conversation's messages: type as a string, private flag, author, attachments."""
        with self.lock:
            found = [
                m for m in self.messages_by_id.values() if m.conversation_id == conversation_id
            ]
            return [self._flat_message(m) for m in found]

    def messages_by_source_id(self, source_id: str) -> list[dict[str, Any]]:
        with self.lock:
            found = [m for m in self.messages_by_id.values() if m.source_id == source_id]
            return [self._flat_message(m) for m in found]

    def _flat(self, c: Conversation) -> dict[str, Any]:
        return {
            "id": c.id,
            "inbox_id": c.inbox_id,
            "contact_id": c.contact_id,
            "source_id": self.contact_inboxes[c.contact_inbox_id].source_id,
            "status": c.status,
            "custom_attributes": dict(c.custom_attributes),
            "created_at": c.created_at,
        }

    def _flat_message(self, m: Message) -> dict[str, Any]:
        return {
            "id": m.id,
            "conversation_id": m.conversation_id,
            "content": m.content,
            "message_type": MESSAGE_TYPES[m.message_type],
            "private": m.private,
            "source_id": m.source_id,
            "status": m.status,
            "content_attributes": dict(m.content_attributes),
            "author": {"type": m.sender_type, "id": m.sender_id, "name": self._sender_name(m)},
            "attachments": [(a.filename, a.content_type, a.data) for a in m.attachments],
        }

    def _sender_name(self, m: Message) -> str:
        if m.sender_type == "User":
            return self.users[m.sender_id].name
        if m.sender_type == "AgentBot":
            return self.bots[m.sender_id]
        return self.contacts_by_id[m.sender_id].name if m.sender_id in self.contacts_by_id else ""

    # -- agent side (tests) --------------------------------------------------
    def agent_reply(
        self,
        ticket_id: int,
        text: str,
        *,
        public: bool = True,
        attachments: list[tuple[str, str, bytes]] | None = None,
        author: int | None = None,
    ) -> dict[str, Any]:
        """An agent answers in the dashboard: an outgoing message (a private note when not
        `public`) by user `author` (default: the agent), then message_created webhooks."""
        with self.lock:
            conv = self.conversations_by_id[ticket_id]
            message = self._create_message(
                conv,
                content=text,
                message_type=1,
                private=not public,
                sender=("User", author or self.agent_id),
                files=attachments or [],
            )
            return self._flat_message(message)

    def agent_set_status(self, ticket_id: int, status: str) -> None:
        """An agent resolves (or reopens...) a conversation: conversation_status_changed."""
        with self.lock:
            conv = self.conversations_by_id[ticket_id]
            conv.status = status
            self._dispatch("conversation_status_changed", conv.inbox_id, self.conv_hook(conv))

    # -- webhook log (tests) -------------------------------------------------
    def deliveries(self, event: str | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self.emitter.log if event is None or d.event == event]

    async def wait_deliveries(
        self, count: int, *, event: str | None = None, timeout: float = 5.0
    ) -> list[Delivery]:
        """Wait (bounded) until `count` deliveries of `event` are finished (ok or given up)."""
        deadline = time.monotonic() + timeout
        while True:
            done = [d for d in self.deliveries(event) if d.finished]
            if len(done) >= count:
                return done
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(done)}/{count} {event or ''} deliveries finished")
            await asyncio.sleep(0.01)

    async def replay(self, delivery_id: str, *, fresh: bool = True) -> Attempt:
        """Send a delivery again: `fresh` re-signs with a new timestamp (what a retry looks
        like); otherwise the first attempt's headers are resent byte for byte (a replay)."""
        delivery = self._delivery(delivery_id)
        headers = self.emitter.headers(delivery) if fresh else dict(delivery.attempts[0].headers)
        return await self._post_on_loop(delivery, headers)

    async def send_tampered(
        self, delivery_id: str, *, bad_signature: bool = False, age: float = 0.0
    ) -> Attempt:
        """Send a delivery with a wrong signature, or signed correctly but `age` seconds old."""
        delivery = self._delivery(delivery_id)
        stamp = str(int(self.clock() - age))
        headers = self.emitter.headers(delivery, timestamp=stamp)
        if bad_signature:
            sig = headers.get("X-Chatwoot-Signature", "sha256=" + "0" * 64)
            headers["X-Chatwoot-Signature"] = sig[:-4] + ("0000" if sig[-4:] != "0000" else "1111")
        return await self._post_on_loop(delivery, headers)

    def _delivery(self, delivery_id: str) -> Delivery:
        with self.lock:
            return next(d for d in self.emitter.log if d.delivery_id == delivery_id)

    async def _post_on_loop(self, delivery: Delivery, headers: dict[str, str]) -> Attempt:
        assert self._loop is not None, "the fake is not running"
        future = asyncio.run_coroutine_threadsafe(self.emitter.post(delivery, headers), self._loop)
        return await asyncio.wrap_future(future)

    # -- model operations (under the lock) ---------------------------------
    def _dispatch(
        self,
        event: str,
        inbox_id: int | None,
        payload: dict[str, Any],
        message_id: int | None = None,
    ) -> None:
        """Send `event` to the API inbox's webhook_url (conversation_* and message_* events, no
        filter) and to every account webhook subscribed to it."""
        body = {"event": event, **payload}
        targets: list[tuple[Literal["api_inbox", "account"], str, str | None, Signing]] = []
        inbox = self.inboxes.get(inbox_id or 0)
        wanted = event.startswith(("conversation_", "message_"))
        if inbox and inbox.webhook_url and inbox.channel_type == "Channel::Api" and wanted:
            signing = self.emitter.signing
            key = inbox.hmac_token if signing == "fork_hmac_body" else inbox.secret
            targets.append(("api_inbox", inbox.webhook_url, key, signing))
        for hook in self.webhooks.values():
            if event in hook.subscriptions and hook.inbox_id in (None, inbox_id):
                signing = "signed" if self.emitter.signing == "signed" else "unsigned"
                targets.append(("account", hook.url, hook.secret, signing))
        for kind, url, secret, signing in targets:
            delivery = new_delivery(
                number=self._next("delivery"),
                event=event,
                kind=kind,
                url=url,
                payload=body,
                secret=secret,
                signing=signing,
                message_id=message_id if kind == "api_inbox" else None,
            )
            self.emitter.enqueue(delivery)

    def _mark_failed(self, message_id: int, error: str) -> None:
        """An API-inbox webhook that failed marks the message failed (lib/webhooks/trigger.rb)."""
        with self.lock:
            message = self.messages_by_id.get(message_id)
            if message is not None:
                message.status = "failed"
                message.content_attributes["external_error"] = error

    def _validate_contact(self, contact: Contact) -> None:
        """Uniqueness per account (email case-insensitive, identifier, phone) and E.164."""
        errors: list[tuple[str, str]] = []
        others = [c for c in self.contacts_by_id.values() if c.id != contact.id]
        if contact.email and any((c.email or "") == contact.email for c in others):
            errors.append(("email", "Email has already been taken"))
        if contact.identifier and any(c.identifier == contact.identifier for c in others):
            errors.append(("identifier", "Identifier has already been taken"))
        if contact.phone_number:
            if any(c.phone_number == contact.phone_number for c in others):
                errors.append(("phone_number", "Phone number has already been taken"))
            if not E164.match(contact.phone_number):
                errors.append(("phone_number", "Phone number should be in e164 format"))
        if errors:
            raise Invalid(errors)

    def _contact_inbox(self, contact: Contact, inbox: Inbox, source_id: str | None) -> ContactInbox:
        """ContactInboxBuilder: find or create (contact, inbox, source_id); a UUID when none is
        given; a source_id held by another contact in that inbox breaks the unique index."""
        generated = f"chatwoot-source-{self._next('source')}"
        source = source_id or str(uuid.uuid5(uuid.NAMESPACE_URL, generated))
        for ci in self.contact_inboxes.values():
            if ci.inbox_id == inbox.id and ci.source_id == source:
                if ci.contact_id == contact.id:
                    return ci
                raise Answer(500, "not unique")  # RecordNotUnique; callers map it
        ci = ContactInbox(self._next("contact_inbox"), contact.id, inbox.id, source, self.clock())
        self.contact_inboxes[ci.id] = ci
        return ci

    def _create_message(
        self,
        conv: Conversation,
        *,
        content: str | None,
        message_type: int,
        private: bool,
        sender: tuple[str, int],
        files: list[tuple[str, str, bytes]],
        content_type: str = "text",
        source_id: str | None = None,
        echo_id: str | None = None,
    ) -> Message:
        now = self.clock()
        message = Message(
            self._next("message"),
            conv.id,
            conv.inbox_id,
            content,
            message_type,
            private,
            sender[0],
            sender[1],
            content_type=content_type,
            source_id=source_id,
            echo_id=echo_id,
            created_at=now,
        )
        for name, ctype, data in files:
            attachment = Attachment(self._next("attachment"), message.id, name, ctype, data)
            self.attachments[attachment.id] = attachment
            message.attachments.append(attachment)
        self.messages_by_id[message.id] = message
        conv.last_activity_at = now
        if message_type == 0 and conv.status == "resolved":
            conv.status = "open"  # Message#reopen_conversation
        self._dispatch("message_created", conv.inbox_id, self.message_hook(message), message.id)
        return message

    # -- HTTP ----------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        from tests.fakes.chatwoot_routes import add_routes

        add_routes(self, app)
