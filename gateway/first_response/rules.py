"""When a first-response clock starts and stops (DESIGN.md, "First-response latency").

Pure functions of a conversation's latest clock and one stream event, so the
rules can be read, and tested, apart from the tracker that applies them.

- Starts when helpline accepted the customer's first inbound message of a
  conversation, or the first after it was resolved; an inbound call starts it
  when it rings. The clock's channel is the channel that started it.
- Stops at the first public human answer on any channel: a reply whose author
  is a human and that is not internal, an inbound call answered by a human, or
  a callback (an outbound call). Automatic acknowledgements, internal notes,
  bots, system events, an IVR or a voicemail do not stop it; a missed call
  leaves it running.
- Resolving a conversation ends a running clock without an answer (it is not
  counted) and lets the next customer message start a new one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.business_hours import BusinessTime
from gateway.events import EventType
from gateway.store import ClockRow


class Change(enum.Enum):
    NONE = "none"
    STARTED = "started"
    MET = "met"
    CANCELLED = "cancelled"
    REARMED = "rearmed"


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    target: float  # seconds, of business time when `calendar` is set
    calendar: str | None
    hours: BusinessTime

    def due(self, start: float) -> float:
        if self.calendar is None:  # real time
            return start + self.target
        begin = datetime.fromtimestamp(start, UTC)
        return self.hours.add(begin, timedelta(seconds=self.target)).timestamp()

    def business_seconds(self, start: float, stop: float) -> float | None:
        if self.calendar is None:
            return None
        begin, end = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(stop, UTC)
        return self.hours.elapsed(begin, end).total_seconds()


@dataclass(frozen=True, slots=True)
class Outcome:
    change: Change
    clock: ClockRow | None = None  # the row to write, when anything changed


def _starts(event: dict[str, Any]) -> bool:
    kind, data = event["type"], event["data"]
    if kind == EventType.MESSAGE_INBOUND:
        return True
    return bool(kind == EventType.CALL_RINGING and data["direction"] == "inbound")


def _answers(event: dict[str, Any]) -> bool:
    kind, data = event["type"], event["data"]
    if kind == EventType.MESSAGE_OUTBOUND:
        return bool(
            data["author"]["kind"] == "human"
            and not data.get("internal")
            and not data.get("auto_ack")
        )
    if kind == EventType.CALL_ANSWERED:
        return bool(data["answered_by"] == "human" and data["direction"] == "inbound")
    # A callback: the agent calling the customer is an answer whether or not it connects.
    return bool(kind == EventType.CALL_RINGING and data["direction"] == "outbound")


def step(
    latest: ClockRow | None,
    event: dict[str, Any],
    at: float,
    policies: dict[str, ChannelPolicy],
    max_skew: float,
) -> Outcome:
    """What `event` (committed at `at`) does to the conversation whose latest clock is
    `latest`."""
    kind, data = event["type"], event["data"]
    running = latest is not None and latest.state == "running"
    if _starts(event):
        if running or (latest is not None and not latest.rearm):
            return Outcome(Change.NONE)
        channel = data["channel"]
        policy = policies[channel]
        return Outcome(
            Change.STARTED,
            ClockRow(
                conversation_id=data["conversation_id"],
                conversation_number=data["conversation_number"],
                contact_id=data["contact_id"],
                channel=channel,
                started_at=at,
                customer_at=_customer_time(data, at, max_skew),
                target=policy.target,
                calendar=policy.calendar,
                due_at=policy.due(at),
                start_event_id=event.get("id"),
            ),
        )
    if latest is None:
        return Outcome(Change.NONE)
    if running and _answers(event):
        policy = policies[latest.channel]
        seconds = max(0.0, at - latest.started_at)
        business = policy.business_seconds(latest.started_at, at)
        judged = business if business is not None else seconds
        return Outcome(
            Change.MET,
            replace(
                latest,
                state="met",
                stopped_at=at,
                seconds=seconds,
                business_seconds=business,
                within_target=judged <= latest.target,
                reply_event_id=event["id"],
                reply_channel=data["channel"],
            ),
        )
    if kind == EventType.CONVERSATION_RESOLVED:
        if running:
            return Outcome(
                Change.CANCELLED, replace(latest, state="cancelled", stopped_at=at, rearm=True)
            )
        if not latest.rearm:
            return Outcome(Change.REARMED, replace(latest, rearm=True))
    if kind == EventType.CONVERSATION_REOPENED and not running and not latest.rearm:
        return Outcome(Change.REARMED, replace(latest, rearm=True))
    return Outcome(Change.NONE)


def _customer_time(data: dict[str, Any], accepted: float, max_skew: float) -> float | None:
    """The customer's own send time (a mail's Date, the PBX's ring time), clamped."""
    text = data.get("sent_at") or data.get("at")
    if not text:
        return None
    try:
        own = datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
    return min(accepted, max(accepted - max_skew, own))
