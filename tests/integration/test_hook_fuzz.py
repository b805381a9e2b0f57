"""Every webhook receiver takes arbitrary input, correctly signed or not, without a server error.

The receivers at /hooks/NAME are parsers of outside input: a vendor's format
can change, a proxy can mangle a body. Each one is fed a fixed-seed corpus of
bodies (malformed JSON, wrong types, missing and extra fields, odd numbers and
text) both unsigned and signed exactly as its vendor signs, so the parsing
behind the signature check is reached too. Every answer must be a deliberate
one (2xx, 4xx, or 503 "try again"), never a 500, and nothing reaches the stream.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import LiveDaemon, free_port
from tests.fakes.chatwoot_hooks import sign as chatwoot_sign
from tests.fakes.webhook_consumer import SECRET as WHSEC
from tests.fakes.webhook_consumer import spec_signature
from tests.fakes.zendesk_hooks import iso
from tests.fakes.zendesk_hooks import sign as zendesk_sign

NOWHERE = f"http://127.0.0.1:{free_port()}"  # the helpdesks are down: only the receivers run
KEYS = (
    "ticket_id", "ticket", "article", "event", "message_type", "conversation", "id", "sender",
    "conversation_id", "text", "private", "internal", "freshdesk_webhook", "detail", "type",
    "content", "created_by", "custom_attributes", "helpline_cid", "inbox", "account", "body",
)  # fmt: skip
ODD_VALUES: tuple[Any, ...] = (
    None, True, 0, -1, 2**70, 1.5e308, "", " ", "1", "12", "x" * 300, "ünïcødé ✓",
    "\u0000", "<b>html</b>", "sha1=00", "hl_conv_x", "conv_01ABC", [], {}, [1, "a", None],
)  # fmt: skip

SECTIONS = f"""
[backends.hook]
type = "webhook"
url = "{NOWHERE}/hook"
secret = "{WHSEC}"
[backends.zendesk]
type = "zendesk"
url = "{NOWHERE}"
email = "helpline@example.com"
token = "zd-token"
webhook_secret = "zd-secret"
[backends.zammad]
type = "zammad"
url = "{NOWHERE}"
token = "zm-token"
webhook_token = "zm-secret"
[backends.chatwoot]
type = "chatwoot"
url = "{NOWHERE}"
account_id = 1
inbox_id = 7
token = "cw-token"
webhook_secret = "cw-secret"
[backends.freshdesk]
type = "freshdesk"
url = "{NOWHERE}"
api_key = "fd-key"
webhook_secret = "fd-secret"
"""


def value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.3:
        return {rng.choice(KEYS): value(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    if depth < 3 and roll < 0.4:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(ODD_VALUES)


def corpus(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    bodies = [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe\x00", b'{"a": 1}' * 3]
    while len(bodies) < count:
        if rng.random() < 0.1:
            bodies.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))))
        else:
            payload = {k: value(rng) for k in rng.sample(KEYS, 4)}
            bodies.append(json.dumps(payload).encode())  # stdlib: big integers too
    return bodies


def webhook_headers(body: bytes) -> dict[str, str]:
    stamp, msg_id = str(int(time.time())), f"msg_{hashlib.sha256(body).hexdigest()[:16]}"
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": spec_signature(WHSEC, msg_id, stamp, body),
    }


def zendesk_headers(body: bytes) -> dict[str, str]:
    stamp = iso(time.time())
    return {
        "X-Zendesk-Webhook-Signature": zendesk_sign("zd-secret", stamp, body),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
    }


def zammad_headers(body: bytes) -> dict[str, str]:
    mac = hmac.new(b"zm-secret", body, hashlib.sha1).hexdigest()
    return {
        "X-Hub-Signature": f"sha1={mac}",
        "X-Zammad-Delivery": base64.b32encode(body[:10]).decode(),
    }


def chatwoot_headers(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        "X-Chatwoot-Signature": chatwoot_sign("cw-secret", stamp, body),
        "X-Chatwoot-Timestamp": stamp,
    }


def freshdesk_headers(body: bytes) -> dict[str, str]:
    return {"X-Helpline-Token": "fd-secret"}


SIGNERS: dict[str, Callable[[bytes], dict[str, str]]] = {
    "hook": webhook_headers,
    "zendesk": zendesk_headers,
    "zammad": zammad_headers,
    "chatwoot": chatwoot_headers,
    "freshdesk": freshdesk_headers,
}


async def test_no_receiver_answers_any_body_with_a_server_error(make_daemon: Any) -> None:
    live: LiveDaemon = await make_daemon(SECTIONS)
    before = len(await live.stream())
    answers: dict[str, set[int]] = {}
    for n, (name, signer) in enumerate(SIGNERS.items()):
        for body in corpus(seed=n, count=120):
            for headers in ({}, signer(body)):
                sent = {"Content-Type": "application/json", **headers}
                async with live.http.post(
                    f"{live.url}/hooks/{name}", data=body, headers=sent
                ) as resp:
                    await resp.read()
                    answers.setdefault(name, set()).add(resp.status)
                    assert resp.status != 500 and resp.status < 600, (name, body[:200], resp.status)
    # the signed bodies reached the parsers (not every answer is the signature's 401)
    for name, statuses in answers.items():
        assert statuses - {401}, (name, statuses)
    assert len(await live.stream()) == before  # no garbage became a reply
