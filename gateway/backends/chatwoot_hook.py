"""What helpline accepts from Chatwoot's webhooks: a signed delivery, an agent's public answer.

Chatwoot (>= 4.13.0 for API-inbox webhooks, >= 4.11.2 for account webhooks)
signs `"{X-Chatwoot-Timestamp}.{raw body}"` with HMAC-SHA256 and sends it as
`X-Chatwoot-Signature: sha256=<hex>` (reference §7.7). Some forks sign the
body alone with the channel's hmac_token (no timestamp), and older versions
do not sign at all, for which a secret token in the webhook URL stands in.

The API inbox's webhook fires for every message of the inbox, helpline's own
writes included: customer messages it posted (incoming), notes (private) and
agent replies written elsewhere that it copied in (outgoing, by its own API
user, `source_id` evt_...). Only an outgoing, public message by a human agent
other than helpline's user, without helpline's marker, is an agent reply.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.backends.chatwoot_api import EVENT_PREFIX

Scheme = Literal["timestamped", "body"]


class Refused(Exception):
    """The delivery cannot be shown to come from Chatwoot."""


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """An agent's public answer on a conversation, as the webhook told it."""

    ticket_id: str
    message_id: int
    text: str
    author: str | None
    marker: str | None = None  # the helpline conversation id the conversation carries
    files: list[tuple[str, str]] = field(default_factory=list)  # (filename, data_url)


def verify(
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    scheme: Scheme,
    url_token: str | None,
    now: float,
    tolerance: float,
) -> None:
    """Raise Refused unless the delivery carries what the config asks for."""
    if url_token is not None and not _same(query.get("token", ""), url_token):
        raise Refused("the webhook URL's token is missing or wrong")
    if secret is None:
        return
    given = headers.get("X-Chatwoot-Signature", "")
    if not given:
        raise Refused("no X-Chatwoot-Signature (is the Chatwoot version signing webhooks?)")
    if scheme == "body":
        signed = body
    else:
        stamp = headers.get("X-Chatwoot-Timestamp", "")
        if not (stamp.isascii() and stamp.isdigit()):
            raise Refused("no X-Chatwoot-Timestamp")
        if abs(now - int(stamp)) > tolerance:
            raise Refused(f"X-Chatwoot-Timestamp {stamp} is outside the tolerance window")
        signed = stamp.encode() + b"." + body
    wanted = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not _same(given.strip().lower(), wanted):
        raise Refused("X-Chatwoot-Signature does not match (wrong webhook_secret?)")


def _same(given: str, wanted: str) -> bool:
    return hmac.compare_digest(given.encode(errors="replace"), wanted.encode(errors="replace"))


def agent_message(
    payload: Any, *, inbox_id: int, api_user_id: int | None, marker: str
) -> AgentMessage | str:
    """The agent's answer this delivery carries, or why it is not one."""
    if not isinstance(payload, dict):
        return "not a JSON object"
    if payload.get("event") != "message_created":
        return f"event {payload.get('event')!r}"
    conversation = payload.get("conversation") or {}
    inbox = (payload.get("inbox") or {}).get("id") or conversation.get("inbox_id")
    if inbox != inbox_id:
        return f"inbox {inbox}, not helpline's"
    if payload.get("message_type") not in ("outgoing", 1):
        return f"message_type {payload.get('message_type')!r}"
    if payload.get("private"):
        return "a private note"
    if str(payload.get("source_id") or "").startswith(EVENT_PREFIX):
        return "helpline's own write"
    sender = payload.get("sender") or {}
    if sender.get("type") != "user":
        return f"sender type {sender.get('type')!r}"
    if api_user_id is not None and sender.get("id") == api_user_id:
        return "written by helpline's API user"
    if conversation.get("id") is None or payload.get("id") is None:
        return "no conversation or message id"
    files = []
    for att in payload.get("attachments") or []:
        url = att.get("data_url") if isinstance(att, dict) else None
        if isinstance(url, str) and url:
            name = urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))
            files.append((name or f"attachment-{att.get('id')}", url))
    text = str(payload.get("content") or "")
    if not text.strip() and not files:
        return "no text and no attachment"
    cid = (conversation.get("custom_attributes") or {}).get(marker)
    return AgentMessage(
        ticket_id=str(conversation["id"]),
        message_id=int(payload["id"]),
        text=text,
        author=sender.get("name") or None,
        marker=cid if isinstance(cid, str) and cid else None,
        files=files,
    )
