"""The keys every backend section shares: where it starts, how hard it pushes, how it waits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config_types import Section
from gateway.units import Duration


class DeliverySection(Section):
    """Base of every `[backends.NAME]` section."""

    # A new backend gets what happens from now on, never years of history by surprise;
    # "beginning" or an offset backfills. Only read the first time the backend starts.
    start: Literal["now", "beginning"] | int = "now"
    # Conversations delivered at once; one conversation's events always go in order.
    concurrency: int = Field(default=4, ge=1, le=64)
    # Events read ahead of delivery at most (bounded memory; the rest waits in the store).
    max_queued: int = Field(default=1000, ge=10, le=100_000)
    # One request's limit: connect, send, answer.
    timeout: Duration = Field(default=15.0, gt=0)
    # Temporary failures retry after retry_base, doubling, with jitter, up to retry_cap.
    retry_base: Duration = Field(default=1.0, gt=0)
    retry_cap: Duration = Field(default=60.0, gt=0)
