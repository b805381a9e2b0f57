"""Chatwoot's JSON shapes for the fake: REST bodies (integer message_type) and webhooks
(string message_type), signing, and the delivery log of the webhook emitter.

Reference: backends.md section 7.7 (and the Chatwoot rows of sections 8 and 10). What a
receiver meets on the wire:

- body: the event's JSON, compact and Rails-escaped (`<`, `>`, `&` as \\u003c...), so a receiver
  that verifies a re-serialised body instead of the raw bytes fails as it would in production;
- signed mode (Chatwoot >= 4.11.2 account webhooks, >= 4.13.0 API-inbox webhooks):
  `X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "{ts}.{body}")>`,
  `X-Chatwoot-Timestamp: <unix seconds>` (new on every attempt), `X-Chatwoot-Delivery: <uuid>`
  (the same on every attempt of one event);
- unsigned mode (older versions): none of those three headers;
- fork mode (◐ some forks sign API-inbox webhooks with the channel's `hmac_token` over the body
  alone, no timestamp, no delivery id).

Retries (◐ version-dependent): upstream delivers account and API-inbox webhooks exactly once
(chatwoot#15920, open); PR #15952 / the agent-bot job retry 429, 5xx, timeouts and connection
errors up to 3 attempts, 3 s apart, keeping the delivery id and re-signing each attempt. The
fake does the first by default (`webhook_attempts=1`) and the second with `webhook_attempts=3`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import orjson

if TYPE_CHECKING:
    from tests.fakes.chatwoot import (
        Attachment,
        Contact,
        ContactInbox,
        Conversation,
        Inbox,
        Message,
        User,
    )

Signing = Literal["signed", "unsigned", "fork_hmac_body"]

MESSAGE_TYPES = ("incoming", "outgoing", "activity", "template")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`X-Chatwoot-Signature` for a body: hex HMAC-SHA256 over "{timestamp}.{body}"."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign_body_only(token: str, body: bytes) -> str:
    """The forked scheme (◐): HMAC-SHA256 with the channel's hmac_token over the body alone."""
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def rails_json(payload: Any) -> bytes:
    """Compact JSON as Rails' `to_json` writes it (HTML-significant characters escaped)."""
    raw = orjson.dumps(payload)
    return raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def iso(ts: float) -> str:
    """A Rails TimeWithZone in JSON: ISO 8601, milliseconds, Z."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Attempt:
    """One POST of a delivery: what was sent and how the receiver answered."""

    at: float
    headers: dict[str, str]
    status: int | None  # None: no HTTP answer (timeout, refused, reset)
    error: str | None = None


@dataclass
class Delivery:
    """One event sent to one target; `attempts` grows with retries and replays."""

    delivery_id: str
    event: str
    kind: Literal["api_inbox", "account"]
    url: str
    body: bytes
    secret: str | None
    signing: Signing
    message_id: int | None
    attempts: list[Attempt] = field(default_factory=list)
    finished: bool = False
    ok: bool = False

    @property
    def payload(self) -> Any:
        return orjson.loads(self.body)


class Emitter:
    """Sends deliveries from the fake's loop and keeps their log (guarded by the fake's lock)."""

    def __init__(
        self,
        owner: Any,
        *,
        signing: Signing,
        attempts: int,
        retry_wait: float,
        timeout: float,
    ) -> None:
        self.owner = owner
        self.signing: Signing = signing
        self.max_attempts = max(1, attempts)
        self.retry_wait = retry_wait
        self.timeout = timeout
        self.log: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # -- scheduling --------------------------------------------------------
    def enqueue(self, delivery: Delivery) -> None:
        """Log the delivery and start it on the fake's loop (from any thread)."""
        with self.owner.lock:
            self.log.append(delivery)
        loop = self.owner._loop
        if loop is None:
            return  # not serving: logged, never sent
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._spawn(delivery)
        else:
            loop.call_soon_threadsafe(self._spawn, delivery)

    def _spawn(self, delivery: Delivery) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: Delivery) -> None:
        for number in range(1, self.max_attempts + 1):
            attempt = await self.post(delivery, self.headers(delivery))
            if attempt.status is not None and 200 <= attempt.status < 300:
                self._finish(delivery, ok=True)
                return
            retryable = attempt.status is None or attempt.status == 429 or attempt.status >= 500
            if not retryable or number == self.max_attempts:
                break
            await asyncio.sleep(self.retry_wait)
        self._finish(delivery, ok=False)
        if delivery.kind == "api_inbox" and delivery.message_id is not None:
            last = delivery.attempts[-1]
            self.owner._mark_failed(delivery.message_id, last.error or f"HTTP {last.status}")

    def _finish(self, delivery: Delivery, *, ok: bool) -> None:
        with self.owner.lock:
            delivery.finished = True
            delivery.ok = ok

    # -- one POST ----------------------------------------------------------
    def headers(self, delivery: Delivery, *, timestamp: str | None = None) -> dict[str, str]:
        """Headers of a fresh attempt: a new timestamp and signature, the same delivery id."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if delivery.signing == "signed" and delivery.secret:
            ts = timestamp or str(int(self.owner.clock()))
            headers["X-Chatwoot-Signature"] = sign(delivery.secret, ts, delivery.body)
            headers["X-Chatwoot-Timestamp"] = ts
        if delivery.signing == "signed":
            headers["X-Chatwoot-Delivery"] = delivery.delivery_id
        if delivery.signing == "fork_hmac_body" and delivery.secret:
            headers["X-Chatwoot-Signature"] = sign_body_only(delivery.secret, delivery.body)
        return headers

    async def post(self, delivery: Delivery, headers: dict[str, str]) -> Attempt:
        """POST the body once (redirects not followed) and log the answer."""
        attempt = Attempt(self.owner.clock(), headers, None)
        with self.owner.lock:
            delivery.attempts.append(attempt)
        limit = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=limit) as http,
                http.post(
                    delivery.url, data=delivery.body, headers=headers, allow_redirects=False
                ) as response,
            ):
                await response.read()
                status = response.status
            with self.owner.lock:
                attempt.status = status
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            with self.owner.lock:
                attempt.error = f"{type(err).__name__}: {err}"
        return attempt


def new_delivery(
    *,
    number: int,
    event: str,
    kind: Literal["api_inbox", "account"],
    url: str,
    payload: dict[str, Any],
    secret: str | None,
    signing: Signing,
    message_id: int | None,
) -> Delivery:
    return Delivery(
        delivery_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"chatwoot-delivery-{number}")),
        event=event,
        kind=kind,
        url=url,
        body=rails_json(payload),
        secret=secret,
        signing=signing,
        message_id=message_id,
    )


def file_type(content_type: str) -> str:
    """Attachment.file_type from the upload's MIME type."""
    major = content_type.split("/", 1)[0]
    return major if major in ("image", "audio", "video") else "file"


class Render:
    """The jbuilder views (REST) and `webhook_data` (webhooks) of the fake's records."""

    account_id: int
    account_name: str
    port: int
    expose_contact_inbox: bool
    inboxes: dict[int, Inbox]
    contacts_by_id: dict[int, Contact]
    contact_inboxes: dict[int, ContactInbox]
    conversations_by_id: dict[int, Conversation]
    messages_by_id: dict[int, Message]
    users: dict[int, User]
    bots: dict[int, str]

    # -- REST ----------------------------------------------------------------
    def inbox_json(self, inbox: Inbox) -> dict[str, Any]:
        api = inbox.channel_type == "Channel::Api"
        return {
            "id": inbox.id,
            "account_id": self.account_id,
            "channel_id": inbox.id,
            "name": inbox.name,
            "channel_type": inbox.channel_type,
            "avatar_url": "",
            "greeting_enabled": False,
            "enable_auto_assignment": True,
            "lock_to_single_conversation": inbox.lock_to_single_conversation,
            "webhook_url": inbox.webhook_url if api else None,
            "inbox_identifier": f"cw-inbox-identifier-{inbox.id}",
            "hmac_token": inbox.hmac_token,
            "hmac_mandatory": False,
            **({"secret": inbox.secret} if api else {}),
        }

    def contact_inbox_json(self, ci: ContactInbox) -> dict[str, Any]:
        return {"source_id": ci.source_id, "inbox": self.inbox_json(self.inboxes[ci.inbox_id])}

    def contact_json(self, contact: Contact, with_inboxes: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "additional_attributes": dict(contact.additional_attributes),
            "availability_status": "offline",
            "email": contact.email,
            "id": contact.id,
            "name": contact.name,
            "phone_number": contact.phone_number,
            "identifier": contact.identifier,
            "thumbnail": "",
            "custom_attributes": dict(contact.custom_attributes),
            "created_at": int(contact.created_at),
        }
        if with_inboxes:
            body["contact_inboxes"] = [
                self.contact_inbox_json(ci)
                for ci in self.contact_inboxes.values()
                if ci.contact_id == contact.id
            ]
        return body

    def contact_push(self, contact: Contact) -> dict[str, Any]:
        keys = ("additional_attributes", "custom_attributes", "email", "id", "identifier")
        body = {k: v for k, v in self.contact_json(contact, False).items() if k in keys}
        return body | {
            "name": contact.name,
            "phone_number": contact.phone_number,
            "thumbnail": "",
            "type": "contact",
        }

    def sender_push(self, message: Message) -> dict[str, Any]:
        if message.sender_type == "User":
            user = self.users[message.sender_id]
            return {
                "id": user.id,
                "name": user.name,
                "available_name": user.name,
                "avatar_url": "",
                "type": "user",
                "availability_status": "online",
                "thumbnail": "",
            }
        if message.sender_type == "AgentBot":
            name = self.bots[message.sender_id]
            return {"id": message.sender_id, "name": name, "avatar_url": "", "type": "agent_bot"}
        return self.contact_push(self.contacts_by_id[message.sender_id])

    def attachment_json(self, a: Attachment) -> dict[str, Any]:
        url = (
            f"http://127.0.0.1:{self.port}/rails/active_storage/blobs/redirect/{a.id}/{a.filename}"
        )
        return {
            "id": a.id,
            "message_id": a.message_id,
            "file_type": file_type(a.content_type),
            "account_id": self.account_id,
            "extension": a.filename.rsplit(".", 1)[-1] if "." in a.filename else None,
            "data_url": url,
            "thumb_url": url if file_type(a.content_type) == "image" else "",
            "file_size": len(a.data),
            "width": None,
            "height": None,
        }

    def message_json(self, m: Message) -> dict[str, Any]:
        """messages/_message.json.jbuilder: message_type as its integer."""
        body: dict[str, Any] = {
            "id": m.id,
            "content": m.content,
            "inbox_id": m.inbox_id,
            "conversation_id": m.conversation_id,
            "message_type": m.message_type,
            "content_type": m.content_type,
            "content_attributes": dict(m.content_attributes),
            "created_at": int(m.created_at),
            "private": m.private,
            "source_id": m.source_id,
            "sender": self.sender_push(m),
        }
        if m.echo_id:
            body["echo_id"] = m.echo_id
        if m.attachments:
            body["attachments"] = [self.attachment_json(a) for a in m.attachments]
        return body

    def conversation_json(self, c: Conversation) -> dict[str, Any]:
        """conversations/partials/_conversation.json.jbuilder (the REST conversation)."""
        inbox = self.inboxes[c.inbox_id]
        meta: dict[str, Any] = {
            "sender": self.contact_json(self.contacts_by_id[c.contact_id]),
            "channel": inbox.channel_type,
            "hmac_verified": False,
        }
        if self.expose_contact_inbox:
            meta["contact_inbox"] = self.contact_inbox_json(
                self.contact_inboxes[c.contact_inbox_id]
            )
        last = [m for m in self.messages_by_id.values() if m.conversation_id == c.id][-1:]
        return {
            "meta": meta,
            "id": c.id,
            "messages": [self.message_json(m) for m in last],
            "account_id": self.account_id,
            "uuid": c.uuid,
            "additional_attributes": dict(c.additional_attributes),
            "can_reply": True,
            "custom_attributes": dict(c.custom_attributes),
            "inbox_id": c.inbox_id,
            "labels": [],
            "muted": False,
            "snoozed_until": None,
            "status": c.status,
            "created_at": int(c.created_at),
            "timestamp": int(c.last_activity_at),
            "last_activity_at": int(c.last_activity_at),
            "unread_count": 0,
            "priority": None,
        }

    # -- webhooks ------------------------------------------------------------
    def conv_hook(self, c: Conversation) -> dict[str, Any]:
        """Conversation#webhook_data (push_data): what conversation_* events carry."""
        ci = self.contact_inboxes[c.contact_inbox_id]
        last = [m for m in self.messages_by_id.values() if m.conversation_id == c.id][-1:]
        return {
            "additional_attributes": dict(c.additional_attributes),
            "can_reply": True,
            "channel": self.inboxes[c.inbox_id].channel_type,
            "contact_inbox": {
                "id": ci.id,
                "contact_id": ci.contact_id,
                "inbox_id": ci.inbox_id,
                "source_id": ci.source_id,
                "created_at": iso(ci.created_at),
                "hmac_verified": False,
            },
            "id": c.id,
            "inbox_id": c.inbox_id,
            "messages": [self.message_json(m) for m in last],
            "labels": [],
            "meta": {
                "sender": self.contact_push(self.contacts_by_id[c.contact_id]),
                "assignee": None,
                "team": None,
                "hmac_verified": False,
            },
            "status": c.status,
            "custom_attributes": dict(c.custom_attributes),
            "snoozed_until": None,
            "unread_count": 0,
            "agent_last_seen_at": 0,
            "contact_last_seen_at": 0,
            "last_activity_at": int(c.last_activity_at),
            "timestamp": int(c.last_activity_at),
            "created_at": int(c.created_at),
            "account_id": self.account_id,
        }

    def contact_hook(self, contact: Contact) -> dict[str, Any]:
        return self.contact_push(contact) | {"avatar": ""}

    def message_hook(self, m: Message) -> dict[str, Any]:
        """Message#webhook_data (section 7.7): message_type as a string, times in ISO 8601."""
        if m.sender_type == "User":
            user = self.users[m.sender_id]
            sender: dict[str, Any] = {
                "id": user.id,
                "name": user.name,
                "email": user.email,
                "type": "user",
            }
        elif m.sender_type == "AgentBot":
            sender = {"id": m.sender_id, "name": self.bots[m.sender_id], "type": "agent_bot"}
        else:
            sender = self.contact_hook(self.contacts_by_id[m.sender_id])
        inbox = self.inboxes[m.inbox_id]
        body: dict[str, Any] = {
            "id": m.id,
            "content": m.content,
            "content_type": m.content_type,
            "content_attributes": dict(m.content_attributes),
            "message_type": MESSAGE_TYPES[m.message_type],
            "private": m.private,
            "source_id": m.source_id,
            "created_at": iso(m.created_at),
            "additional_attributes": {},
            "sender": sender,
            "conversation": self.conv_hook(self.conversations_by_id[m.conversation_id]),
            "inbox": {"id": inbox.id, "name": inbox.name},
            "account": {"id": self.account_id, "name": self.account_name},
        }
        if m.attachments:
            body["attachments"] = [self.attachment_json(a) for a in m.attachments]
        return body
