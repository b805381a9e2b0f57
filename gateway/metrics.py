"""Every Prometheus metric helpline exports, defined in one place.

A registry per daemon (not the library's global one) so that tests can run
several daemons in one process and each /metrics shows only its own.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

from gateway.config import CHANNELS

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only add noise


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingested = Counter(
            "helpline_ingested", "Inbound items appended to the stream", ["channel"], registry=r
        )
        self.duplicates = Counter(
            "helpline_duplicates",
            "Repeated deliveries acknowledged without a second event",
            ["channel"],
            registry=r,
        )
        self.message_id_conflicts = Counter(
            "helpline_message_id_conflicts",
            "Mail reusing a known Message-ID with other content: taken, not dropped",
            ["channel"],
            registry=r,
        )
        self.ingest_errors = Counter(
            "helpline_ingest_errors",
            "Inbound items refused or failed, by reason",
            ["channel", "reason"],
            registry=r,
        )
        self.connector_errors = Counter(
            "helpline_component_errors",
            "Errors reported by a connector or backend",
            ["component"],
            registry=r,
        )
        self.pending_ingests = Gauge(
            "helpline_pending_writes", "Writes waiting for a commit", registry=r
        )
        self.commit_seconds = Histogram(
            "helpline_commit_seconds",
            "Time from the start of a grouped transaction to its durable commit",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.commit_batch = Histogram(
            "helpline_commit_batch_size",
            "Writes per grouped commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.stream_head = Gauge(
            "helpline_stream_head_offset", "Offset of the newest committed event", registry=r
        )
        self.component_up = Gauge(
            "helpline_component_up",
            "1 when a connector or backend is running (degraded counts as up)",
            ["component", "kind"],
            registry=r,
        )
        self.component_counter = Gauge(
            "helpline_component_counter",
            "A count a connector or backend reports in its health (fetched, reconnects...)",
            ["component", "counter"],
            registry=r,
        )
        self.idempotency_keys = Gauge(
            "helpline_idempotency_keys",
            "Idempotency keys remembered (bounded by the window)",
            registry=r,
        )
        self.idempotency_oldest = Gauge(
            "helpline_idempotency_oldest_age_seconds",
            "Age of the oldest remembered idempotency key",
            registry=r,
        )
        self.store_writable = Gauge(
            "helpline_store_writable", "1 when the last commit succeeded", registry=r
        )
        for channel in CHANNELS:  # every series exists from the start, at zero
            self.ingested.labels(channel)
            self.duplicates.labels(channel)

    def observe_commit(self, seconds: float, size: int) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_batch.observe(size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
