"""The first-response report: per channel how fast customers got their first human answer.

One answer for the API (`GET /v1/reports/first-response`), the CLI
(`helpline report first-response`) and the dashboard, with JSON field names
that scripts rely on (docs/first-response.md, "Report"):

- Latencies are those of the clocks stopped by an answer (state met) whose
  stop lies in [since, now], grouped by the clock's channel (the one that
  started it), in real seconds, or with `business_hours` in business seconds
  where the clock counted a calendar (real seconds where it did not).
- Percentiles are nearest rank: the smallest latency with at least p% of the
  latencies at or below it, so each is a latency that really occurred (never
  an interpolation between two).
- `within_target` is the share of those clocks judged within target when they
  stopped (in the calendar their channel had then), so it matches the
  Prometheus counters whatever `business_hours` says.
- `breaches` counts those answered past target and those waiting now past it.
- `waiting` is the clocks still running now, whenever they started.
"""

from __future__ import annotations

from typing import Any

from gateway.config import CHANNELS, CoreConfig
from gateway.errors import InvalidInput
from gateway.store import ClockRow, Latencies, Store, Waiting, ts


async def build_report(
    store: Store,
    config: CoreConfig,
    now: float,
    *,
    since: float,
    channel: str | None = None,
    business_hours: bool = False,
    waiting_limit: int = 10,
) -> dict[str, Any]:
    """The report over [since, now], for every channel or only `channel`."""
    if channel is not None and channel not in CHANNELS:
        raise InvalidInput("channel", f"must be one of {', '.join(CHANNELS)}, not {channel!r}")
    if since > now:
        raise InvalidInput("since", "must not be later than now")
    if waiting_limit < 0:
        raise InvalidInput("waiting_limit", "must not be negative")
    stats = await store.met_stats(since, now, channel, business_hours)
    waiting = await store.waiting_clocks(now, channel, waiting_limit)
    names = _Names(store)
    channels: dict[str, Any] = {}
    for name in (channel,) if channel is not None else CHANNELS:
        latencies = stats.channels.get(name)
        queue = waiting.get(name, Waiting(0, 0, []))
        channels[name] = {
            "target": getattr(config.first_response.targets, name),
            "calendar": config.first_response.business_hours.get(name),  # type: ignore[call-overload]
            **_figures(latencies),
            "breaches": (latencies.past_target if latencies else 0) + queue.past_due,
            "stages": {
                "customer_to_accepted": _stage(stats.customer_to_accepted.get(name)),
                "accepted_to_backend": {
                    backend: _stage(latencies)
                    for (ch, backend), latencies in stats.accepted_to_backend.items()
                    if ch == name
                },
                "accepted_to_reply": _stage(stats.accepted_to_reply.get(name)),
            },
            "waiting": {
                "count": queue.count,
                "oldest": [await _waiting(row, now, names) for row in queue.oldest],
            },
        }
    return {
        "since": ts(since),
        "until": ts(now),
        "business_hours": business_hours,
        "channels": channels,
        "daily": [_day(day, name, latencies) for (day, name), latencies in stats.days.items()],
    }


def _figures(latencies: Latencies | None) -> dict[str, Any]:
    if latencies is None:
        return {
            "count": 0,
            "p50": None,
            "p90": None,
            "p99": None,
            "mean": None,
            "within_target": None,
        }
    return {
        "count": latencies.count,
        "p50": latencies.p50,
        "p90": latencies.p90,
        "p99": latencies.p99,
        "mean": latencies.mean,
        "within_target": latencies.within_target,
    }


def _day(day: str, channel: str, latencies: Latencies) -> dict[str, Any]:
    figures = _figures(latencies)
    del figures["mean"]
    return {"date": day, "channel": channel, **figures}


def _stage(latencies: Latencies | None) -> dict[str, float] | None:
    if latencies is None:
        return None
    return {"p50": latencies.p50, "p90": latencies.p90, "mean": latencies.mean}


class _Names:
    """Contacts' names, each looked up once per report; none for an erased person."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: dict[str, str | None] = {}

    async def get(self, contact_id: str) -> str | None:
        if contact_id not in self._known:
            contact = await self._store.get_contact(contact_id)
            name = None
            if contact is not None and contact.erased_at is None:
                name = contact.name
            self._known[contact_id] = name
        return self._known[contact_id]


async def _waiting(row: ClockRow, now: float, names: _Names) -> dict[str, Any]:
    return {
        "conversation_id": row.conversation_id,
        "conversation_number": row.conversation_number,
        "contact_id": row.contact_id,
        "name": await names.get(row.contact_id),
        "started_at": ts(row.started_at),
        "age": max(0.0, now - row.started_at),
        "breached": row.breached_at is not None or row.due_at <= now,
    }
