"""How long a backend waits after a temporary failure, and what holds all its lanes.

Capped exponential backoff with jitter, counted per event and per backend (a
helpdesk that is down for everyone should not be hit by each lane starting its
count afresh); a Retry-After holds every lane until it has passed, so no request
goes out before the helpdesk asked for one.
"""

from __future__ import annotations

import asyncio
import random
import time

from gateway.delivery.settings import DeliverySection


class Backoff:
    def __init__(self, settings: DeliverySection) -> None:
        self._settings = settings
        self._not_before = 0.0  # time.monotonic() before which no lane sends
        self.failures = 0  # consecutive temporary failures, backend-wide

    async def hold(self) -> None:
        """Wait out a Retry-After the helpdesk gave (to any lane)."""
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def failed(self, attempt: int, retry_after: float | None) -> float:
        """Count a temporary failure; the seconds this lane waits before its next try."""
        self.failures += 1
        settings = self._settings
        steps = max(attempt, self.failures) - 1
        delay = min(settings.retry_cap, settings.retry_base * 2.0 ** min(steps, 30))
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
        if retry_after is not None:
            delay = max(delay, min(retry_after, settings.retry_cap * 4))
            self._not_before = max(self._not_before, time.monotonic() + delay)
        return delay

    def succeeded(self) -> None:
        self.failures = 0
