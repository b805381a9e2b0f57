"""Event data of phone calls and of first-response clocks.

A call is a contact attempt the customer makes in real time: it rings, it is
answered (by a human, or by an IVR or a voicemail that is no answer at all),
or it is missed. The PBX connector records these; so can anything else through
the core's call API. The first-response events are what the clocks report:
`met` when a human answered, `breached` the moment a target passed unanswered.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config import Channel
from gateway.event_base import EventData, Timestamp


class CallCaller(EventData):
    phone: str | None = Field(default=None, description="E.164")
    name: str | None = None


class CallEvent(EventData):
    """One step of a call: ringing, answered or missed."""

    channel: Literal["voice"] = "voice"
    conversation_id: str
    conversation_number: int
    contact_id: str
    call_id: str = Field(description="the PBX's id of the call, the same for all its steps")
    direction: Literal["inbound", "outbound"]
    caller: CallCaller = Field(alias="from")
    answered_by: Literal["human", "ivr", "voicemail"] | None = Field(
        default=None, description="answered: who took it (only a human ends a waiting time)"
    )
    agent: str | None = Field(default=None, description="answered by a human: who")
    at: Timestamp = Field(description="when it happened at the PBX (clamped to accepted_at)")
    accepted_at: Timestamp


class Stages(EventData):
    """Where the wait went, in seconds (null where not known)."""

    customer_to_accepted: float | None = Field(
        default=None,
        description="the customer's own send time to helpline's accept time: shown, never "
        "trusted (clamped to [accepted - max_skew, accepted])",
    )
    accepted_to_reply: float = Field(description="the clock itself, in real seconds")


class FirstResponseMet(EventData):
    """A first-response clock stopped: a human answered the customer."""

    conversation_id: str
    conversation_number: int
    contact_id: str
    channel: Channel = Field(description="the channel that started the clock")
    reply_channel: Channel = Field(description="the channel the answer went out on")
    reply_event_id: str
    started_at: Timestamp
    stopped_at: Timestamp
    seconds: float = Field(description="real seconds from accepted to answered")
    business_seconds: float | None = Field(
        default=None, description="the same counted in the channel's business hours, if any"
    )
    target_seconds: float
    within_target: bool = Field(description="judged in business hours where the channel has them")
    stages: Stages


class FirstResponseBreached(EventData):
    """A conversation's first-response target passed with no human answer yet."""

    conversation_id: str
    conversation_number: int
    contact_id: str
    channel: Channel
    started_at: Timestamp
    due_at: Timestamp = Field(description="when the target passed")
    target_seconds: float
    business_hours: str | None = Field(
        default=None, description="the calendar the target is counted in, if any"
    )
