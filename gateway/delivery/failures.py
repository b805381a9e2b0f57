"""How a delivery attempt can fail, and how an HTTP answer maps onto that.

The engine acts on the class, never on a vendor's status code: a temporary
failure waits and retries for as long as it takes, an "already exists" answer
is looked up and adopted, a permanent refusal parks that one event. Whether
the request may have been carried out matters as much: after an ambiguous
failure the next attempt looks before it creates again.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

# Answers that mean "not now" (RFC 9110 408, 429; 5xx), where retrying helps.
_TEMPORARY = {408, 425, 429}
# 5xx answers a server gives before doing anything (overloaded, down for maintenance).
_NOT_EXECUTED_5XX = {503}


class DeliveryFailure(Exception):
    """Base of the failures a sink raises; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body  # the answer's parsed JSON (or text), for vendor-specific checks


class TemporaryFailure(DeliveryFailure):
    """Retry later. `ambiguous`: the request may have been carried out."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
        reachable: bool = True,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after
        self.ambiguous = ambiguous
        self.reachable = reachable  # False: no connection at all (refused, DNS, TLS)


class Unauthorized(TemporaryFailure):
    """The backend refused helpline's credentials: not the event's fault, so nothing is
    parked; every event waits until the credentials are fixed (and the config reloaded)."""


class AlreadyExists(DeliveryFailure):
    """The backend holds the item already (409, a duplicate external id): look it up."""


class PermanentFailure(DeliveryFailure):
    """The backend refuses this event for good: it is parked as a dead letter."""


class EndpointGone(DeliveryFailure):
    """The endpoint asked never to be called again (410 Gone): delivery stops until reload."""


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(
    status: int, headers: Mapping[str, str], detail: str, body: Any = None
) -> DeliveryFailure | None:
    """The failure an HTTP answer means, or None for success (2xx)."""
    if 200 <= status < 300:
        return None
    message = f"HTTP {status}: {detail[:300]}" if detail else f"HTTP {status}"
    if status in (401, 403, 407):
        return Unauthorized(message, status=status, body=body)
    if status == 409:
        return AlreadyExists(message, status=status, body=body)
    if status == 410:
        return EndpointGone(message, status=status, body=body)
    if status in _TEMPORARY or status >= 500:
        return TemporaryFailure(
            message,
            status=status,
            body=body,
            retry_after=retry_after(headers),
            ambiguous=status >= 500 and status not in _NOT_EXECUTED_5XX,
        )
    if 300 <= status < 400:
        # Never followed (Standard Webhooks): a moved endpoint is a configuration to fix,
        # not a reason to drop events, so it waits like an outage.
        where = headers.get("Location", "")
        return TemporaryFailure(
            f"{message} (redirect to {where!r} not followed)", status=status, body=body
        )
    return PermanentFailure(message, status=status, body=body)
