"""Standard Webhooks v1 (symmetric): signing what helpline sends, verifying what it receives.

The signed content is "{webhook-id}.{webhook-timestamp}.{body}", HMAC-SHA256
under the base64-decoded `whsec_` secret, sent as "v1,<base64>"; several
signatures (space-separated) during a secret rotation. A receiver compares in
constant time and refuses timestamps outside its tolerance, which with the
durable webhook-id record makes a captured request useless to replay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

PREFIX = "whsec_"


class SignatureError(ValueError):
    """A request that is not provably from the holder of the secret, or not fresh."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret; a clear error for anything else."""
    if not secret.startswith(PREFIX):
        raise ValueError("a Standard Webhooks secret starts with 'whsec_' (then base64)")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except binascii.Error as err:
        raise ValueError("the part after 'whsec_' is not valid base64") from err
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the secret holds {len(key)} bytes; Standard Webhooks asks for 24 to 64")
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers_for(
    keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers of one attempt, signed with every current key."""
    if "." in webhook_id:
        raise ValueError("a webhook-id must not contain '.'")
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(k, webhook_id, timestamp, body) for k in keys),
        "Content-Type": "application/json",
    }


def verify(
    keys: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float,
) -> str:
    """The webhook-id of a request signed by one of `keys` within `tolerance` seconds."""
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not webhook_id or not stamp or not signatures:
        raise SignatureError(
            "missing Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature)"
        )
    if not (stamp.isascii() and stamp.isdigit()):
        raise SignatureError("webhook-timestamp is not integer unix seconds")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"webhook-timestamp is {int(now - timestamp)} s away from now "
            f"(tolerance {int(tolerance)} s): refused as a possible replay"
        )
    offered = [s for s in signatures.split(" ") if s.startswith("v1,")]
    for key in keys:
        expected = sign(key, webhook_id, timestamp, body)
        if any(hmac.compare_digest(expected.encode(), c.encode(errors="replace")) for c in offered):
            return webhook_id
    raise SignatureError("no webhook-signature matches the configured secret")
