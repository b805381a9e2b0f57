"""Every Prometheus metric helpline exports, defined in one place.

A registry per daemon (not the library's global one) so that tests can run
several daemons in one process and each /metrics shows only its own.
"""

from __future__ import annotations

import contextlib
from typing import Any

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


# One bucket set for every channel: log-spaced from 1 s to a day, dense around the default
# targets (voice 4 s, chat 13 s, email/web 3 min). The share within target is exact from
# the within/past counters whatever the buckets.
FIRST_RESPONSE_BUCKETS = (
    1, 2, 3, 4, 5, 6, 8, 10, 13, 15, 20, 30, 45, 60, 90, 120, 150, 180, 210, 240, 300,
    450, 600, 900, 1200, 1800, 2700, 3600, 7200, 14400, 28800, 43200, 86400,
)  # fmt: skip


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
        self.fr_seconds = Histogram(
            "helpline_first_response_seconds",
            "Customer message accepted to first human answer, by the channel that started it",
            ["channel"],
            buckets=FIRST_RESPONSE_BUCKETS,
            registry=r,
        )
        self.fr_within = Counter(
            "helpline_first_response_within_target",
            "First responses within their channel's target",
            ["channel"],
            registry=r,
        )
        self.fr_past = Counter(
            "helpline_first_response_past_target",
            "First responses later than their channel's target",
            ["channel"],
            registry=r,
        )
        self.fr_breaches = Counter(
            "helpline_first_response_breaches",
            "Targets that passed with no human answer yet (a breach event each)",
            ["channel"],
            registry=r,
        )
        self.fr_waiting = Gauge(
            "helpline_first_response_waiting",
            "Conversations waiting for a first human answer, by age band",
            ["channel", "age"],
            registry=r,
        )
        self.backend_lag_events = Gauge(
            "helpline_backend_lag_events",
            "Events of the stream a backend has not finished delivering",
            ["backend"],
            registry=r,
        )
        self.backend_lag_seconds = Gauge(
            "helpline_backend_lag_seconds",
            "Age of the oldest event a backend has not finished delivering",
            ["backend"],
            registry=r,
        )
        self.backend_in_flight = Gauge(
            "helpline_backend_in_flight",
            "Conversations a backend is delivering now",
            ["backend"],
            registry=r,
        )
        self.backend_dead_letters = Gauge(
            "helpline_backend_dead_letters",
            "Events a backend refused for good, waiting for an operator",
            ["backend"],
            registry=r,
        )
        self.backend_reachable = Gauge(
            "helpline_backend_reachable",
            "1 when the backend answered its last request, 0 when it could not be reached",
            ["backend"],
            registry=r,
        )
        self.backend_authenticated = Gauge(
            "helpline_backend_authenticated",
            "0 when the backend refused helpline's credentials at the last request",
            ["backend"],
            registry=r,
        )
        self._backends: set[str] = set()
        for channel in CHANNELS:  # every series exists from the start, at zero
            self.ingested.labels(channel)
            self.duplicates.labels(channel)
            self.fr_seconds.labels(channel)
            self.fr_within.labels(channel)
            self.fr_past.labels(channel)
            self.fr_breaches.labels(channel)

    def forget_backends(self, keep: set[str]) -> None:
        """Drop the series of backends no longer configured (removed on reload)."""
        gauges = (
            self.backend_lag_events,
            self.backend_lag_seconds,
            self.backend_in_flight,
            self.backend_dead_letters,
            self.backend_reachable,
            self.backend_authenticated,
        )
        for name in self._backends - keep:
            for gauge in gauges:
                with contextlib.suppress(KeyError):  # a series never set for it
                    gauge.remove(name)
        self._backends &= keep

    def observe_backend(self, view: dict[str, Any]) -> None:
        """One backend's figures, from `GET /v1/backends` (board.BackendView.as_json)."""
        name = view["name"]
        self._backends.add(name)
        self.backend_lag_events.labels(name).set(view["lag_events"])
        self.backend_lag_seconds.labels(name).set(view["lag_seconds"])
        self.backend_in_flight.labels(name).set(view["in_flight"])
        self.backend_dead_letters.labels(name).set(view["dead_letters"])
        if view.get("reachable") is not None:
            self.backend_reachable.labels(name).set(1 if view["reachable"] else 0)
        if view.get("authenticated") is not None:
            self.backend_authenticated.labels(name).set(1 if view["authenticated"] else 0)

    def observe_commit(self, seconds: float, size: int) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_batch.observe(size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
