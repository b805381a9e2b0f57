"""First-response clocks driven by a controllable clock and synthetic events of every channel:
exact latencies, breach events, business hours over a weekend and a DST change, restarts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.calls import CallStep
from gateway.identity import Handles
from gateway.ingest import Inbound
from tests.conftest import LiveDaemon, auth, free_port
from tests.integration.test_smtp import inbound as smtp_inbound
from tests.integration.test_smtp import mail, send, smtp_section

MET = "helpline.first_response.met.v1"
BREACHED = "helpline.first_response.breached.v1"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def start(make_daemon: Callable[..., Any], clock: Clock, extra: str = "", **kw: Any) -> Any:
    return await make_daemon(extra, clock=clock, **kw)


async def message(
    live: LiveDaemon, channel: str, who: str, text: str = "Where is my order 4711?", **kw: Any
) -> dict[str, Any]:
    handles = Handles(visitor_id=who) if channel == "chat" else Handles(email=who)
    item = Inbound(channel=channel, source="/connectors/test", handles=handles, text=text, **kw)  # type: ignore[arg-type]
    ack = await live.daemon.ingestor.ingest(item)
    return {"conversation_id": ack.conversation_id, "event_id": ack.event_id}


async def reply(live: LiveDaemon, conversation: str, kind: str = "human", **body: Any) -> str:
    status, answer, _ = await live.post(
        f"/v1/conversations/{conversation}/replies",
        {"text": "On it", "author": {"kind": kind, "name": "Sam"}, **body},
    )
    assert status == 201, answer
    return str(answer["event_id"])


async def call(live: LiveDaemon, call_id: str, phase: str, at: float, **kw: Any) -> Any:
    step = CallStep(
        source="/connectors/pbx",
        call_id=call_id,
        phase=phase,  # type: ignore[arg-type]
        direction=kw.pop("direction", "inbound"),
        phone=kw.pop("phone", "+49 30 1234567"),
        at=datetime.fromtimestamp(at, UTC),
        **kw,
    )
    return await live.daemon.ingestor.ingest_call(step)


async def timing(live: LiveDaemon) -> list[dict[str, Any]]:
    """The clocks' events, once the tracker has read everything."""
    await live.daemon.first_response.tick()
    return [e for e in await live.stream() if e["type"] in (MET, BREACHED)]


async def metrics(live: LiveDaemon) -> str:
    async with live.http.get(live.url + "/metrics", headers=auth()) as resp:
        return await resp.text()


async def test_only_a_public_human_answer_stops_the_clock(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    conv = (await message(live, "email", "ann@example.org"))["conversation_id"]
    clock.now = T0 + 30
    await reply(live, conv, internal=True)  # an internal note
    clock.now = T0 + 40
    await reply(live, conv, kind="bot")  # a bot's answer
    clock.now = T0 + 50
    await reply(live, conv, kind="system")
    assert await timing(live) == []
    clock.now = T0 + 100
    answer = await reply(live, conv)
    clock.now = T0 + 130
    await reply(live, conv)  # a second answer changes nothing
    (met,) = await timing(live)
    data = met["data"]
    assert met["subject"] == conv and met["source"] == "/core"
    assert data["seconds"] == 100.0 and data["within_target"] is True
    assert data["channel"] == "email" and data["target_seconds"] == 180.0
    assert data["reply_event_id"] == answer and data["business_seconds"] is None
    assert data["started_at"] == "2026-11-23T10:00:00.000Z"
    assert data["stopped_at"] == "2026-11-23T10:01:40.000Z"


async def test_events_read_in_one_batch_give_the_clocks_of_one_at_a_time(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    """A tracker that fell behind reads many events at once, a conversation's opening, its
    messages and its answers among them: each still sees the clock the one before it left."""
    live = await start(make_daemon, clock)
    await live.daemon.first_response.stop()  # from now on it reads only when told to
    conv = (await message(live, "email", "eve@example.org"))["conversation_id"]
    clock.now = T0 + 5
    again = await message(live, "email", "eve@example.org", "Anyone there? Order 4711 again")
    assert again["conversation_id"] == conv  # the clock started by the first one runs on
    clock.now = T0 + 50
    answer = await reply(live, conv)
    clock.now = T0 + 80
    await reply(live, conv)
    other = (await message(live, "chat", "visitor-9"))["conversation_id"]
    (met,) = await timing(live)
    assert met["subject"] == conv and met["data"]["reply_event_id"] == answer
    assert met["data"]["seconds"] == 50.0
    clock.now = T0 + 100  # the chat's 13 s target has passed
    met, breach = await timing(live)
    assert breach["type"] == BREACHED and breach["subject"] == other
    assert breach["data"]["due_at"] == "2026-11-23T10:01:33.000Z"


async def test_a_breach_is_emitted_once_when_the_target_passes(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    conv = (await message(live, "chat", "visitor-1"))["conversation_id"]
    clock.now = T0 + 12.9
    assert await timing(live) == []
    clock.now = T0 + 14
    (breach,) = await timing(live)
    assert breach["type"] == BREACHED
    assert breach["data"]["due_at"] == "2026-11-23T10:00:13.000Z"
    assert breach["data"]["channel"] == "chat" and breach["data"]["target_seconds"] == 13.0
    clock.now = T0 + 60
    assert len(await timing(live)) == 1  # not again
    clock.now = T0 + 90
    await reply(live, conv)
    breach, met = await timing(live)
    assert met["data"]["seconds"] == 90.0 and met["data"]["within_target"] is False


async def test_a_reply_just_before_the_target_wins_over_the_timer(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    conv = (await message(live, "chat", "visitor-2"))["conversation_id"]
    clock.now = T0 + 12
    await reply(live, conv)
    clock.now = T0 + 20  # the timer fires after the answer was committed
    (met,) = await timing(live)
    assert met["type"] == MET and met["data"]["within_target"] is True


async def test_a_new_clock_starts_only_after_the_conversation_was_resolved(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    conv = (await message(live, "email", "bob@example.org"))["conversation_id"]
    clock.now = T0 + 60
    await reply(live, conv)
    clock.now = T0 + 120
    assert (await message(live, "email", "bob@example.org", "thanks"))["conversation_id"] == conv
    clock.now = T0 + 1000  # no clock runs for a follow-up in an answered conversation
    assert [e["type"] for e in await timing(live)] == [MET]
    status, _, _ = await live.post(f"/v1/conversations/{conv}/resolve", {})
    assert status == 200
    clock.now = T0 + 2000
    assert (await message(live, "email", "bob@example.org", "broken again"))[
        "conversation_id"
    ] == conv  # reopened within the window
    clock.now = T0 + 2030
    await reply(live, conv)
    first, second = await timing(live)
    assert (first["data"]["seconds"], second["data"]["seconds"]) == (60.0, 30.0)


async def test_resolving_without_an_answer_ends_the_clock_uncounted(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    conv = (await message(live, "api", "spam@example.net"))["conversation_id"]
    await live.post(f"/v1/conversations/{conv}/resolve", {"reason": "spam"})
    clock.now = T0 + 10_000
    assert await timing(live) == []


async def test_a_reply_on_another_channel_stops_the_clock_of_the_first(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    item = Inbound(
        channel="chat",
        source="/connectors/test",
        handles=Handles(visitor_id="visitor-3", phone="+4930555123"),
        text="Please call me back about my order",
    )
    conv = (await live.daemon.ingestor.ingest(item)).conversation_id
    clock.now = T0 + 8
    # The agent calls the customer back: a callback is an answer, on the voice channel.
    ack = await call(live, "cb-1", "ringing", T0 + 8, direction="outbound", phone="+4930555123")
    assert ack.conversation_id == conv
    (met,) = await timing(live)
    assert met["data"]["channel"] == "chat" and met["data"]["reply_channel"] == "voice"
    assert met["data"]["seconds"] == 8.0


async def test_calls_ivr_voicemail_missed_and_callback(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    # Answered by the IVR, then by a human 3 s after ringing: 3 s, within the 4 s target.
    await call(live, "c1", "ringing", T0)
    clock.now = T0 + 1
    await call(live, "c1", "answered", T0 + 1, answered_by="ivr")
    clock.now = T0 + 3
    await call(live, "c1", "answered", T0 + 3, answered_by="human", agent="Sam")
    (met,) = await timing(live)
    assert met["data"]["channel"] == "voice" and met["data"]["seconds"] == 3.0
    assert met["data"]["within_target"] is True
    # Another caller: voicemail, then missed: the clock runs on until the callback.
    clock.now = T0 + 100
    await call(live, "c2", "ringing", T0 + 100, phone="+44 20 7946 0000")
    clock.now = T0 + 120
    await call(live, "c2", "answered", T0 + 120, phone="+44 20 7946 0000", answered_by="voicemail")
    await call(live, "c2", "missed", T0 + 120, phone="+44 20 7946 0000")
    assert [e["type"] for e in await timing(live)] == [MET, BREACHED]  # 4 s passed long ago
    clock.now = T0 + 400
    await call(live, "c3", "ringing", T0 + 400, phone="+44 20 7946 0000", direction="outbound")
    events = await timing(live)
    assert [e["type"] for e in events] == [MET, BREACHED, MET]
    assert events[2]["data"]["seconds"] == 300.0 and events[2]["data"]["within_target"] is False


async def test_business_hours_across_a_weekend_and_a_dst_change(
    make_daemon: Callable[..., Any],
) -> None:
    # Friday 27 March 2026, 16:59 in Berlin; the clocks go forward on Sunday 29 March.
    friday = datetime(2026, 3, 27, 16, 59, tzinfo=BERLIN).timestamp()
    monday = datetime(2026, 3, 30, 9, 1, tzinfo=BERLIN).timestamp()
    clock = Clock(friday)
    office = (
        '[first_response.business_hours]\nemail = "office"\n'
        '[business_hours.office]\ntimezone = "Europe/Berlin"\n'
        + "".join(f'{d} = ["09:00-17:00"]\n' for d in ("monday", "tuesday", "wednesday"))
        + 'thursday = ["09:00-17:00"]\nfriday = ["09:00-17:00"]\n'
    )
    live = await start(make_daemon, clock, office)
    conv = (await message(live, "email", "cara@example.org"))["conversation_id"]
    clock.now = monday - 120  # Monday 08:59: closed all weekend, still within target
    assert await timing(live) == []
    clock.now = monday  # 1 min on Friday + 1 min on Monday = 2 of the 3 business minutes
    await reply(live, conv)
    (met,) = await timing(live)
    data = met["data"]
    assert data["business_seconds"] == 120.0 and data["within_target"] is True
    assert data["seconds"] == monday - friday == 64 * 3600 + 2 * 60 - 3600  # DST: 1 h less


async def test_a_breach_due_while_the_daemon_was_down_is_emitted_once_at_start(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    conv = (await message(live, "email", "dan@example.org"))["conversation_id"]
    state = live.daemon.state_dir
    await live.daemon.stop()
    clock.now = T0 + 600  # the 3 min target passed while it was down
    again = await start(make_daemon, clock, state_dir=state)
    events = [e for e in await again.stream() if e["type"] == BREACHED]
    assert len(events) == 1 and events[0]["subject"] == conv
    assert events[0]["time"] == "2026-11-23T10:10:00.000Z"  # at start, not when it was due
    assert events[0]["data"]["due_at"] == "2026-11-23T10:03:00.000Z"
    await again.daemon.stop()
    third = await start(make_daemon, clock, state_dir=state)
    assert len([e for e in await timing(third) if e["type"] == BREACHED]) == 1


async def test_the_customers_own_time_is_a_clamped_stage(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock, '[first_response]\nmax_skew = "1h"\n')
    sent = {
        "ann@example.org": T0 - 30,  # 30 s in the pipes
        "bob@example.org": T0 + 500,  # a sender clock ahead: never later than accepted
        "cy@example.org": T0 - 86_400,  # a day off: no earlier than max_skew
    }
    for who, at in sent.items():
        conv = (await message(live, "email", who, sent_at=datetime.fromtimestamp(at, UTC)))[
            "conversation_id"
        ]
        await reply(live, conv)
    stages = [e["data"]["stages"]["customer_to_accepted"] for e in await timing(live)]
    assert stages == [30.0, 0.0, 3600.0]


async def test_metrics_show_latency_share_waiting_and_breaches(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    fast = (await message(live, "chat", "v-fast"))["conversation_id"]
    await message(live, "chat", "v-waiting")
    clock.now = T0 + 5
    await reply(live, fast)
    clock.now = T0 + 400
    await timing(live)
    text = await metrics(live)
    assert 'helpline_first_response_seconds_bucket{channel="chat",le="5.0"} 1.0' in text
    assert 'helpline_first_response_seconds_bucket{channel="chat",le="4.0"} 0.0' in text
    assert 'helpline_first_response_within_target_total{channel="chat"} 1.0' in text
    assert 'helpline_first_response_past_target_total{channel="chat"} 0.0' in text
    assert 'helpline_first_response_breaches_total{channel="chat"} 1.0' in text
    assert 'helpline_first_response_waiting{age="5m_to_15m",channel="chat"} 1.0' in text


async def test_the_waiting_gauge_counts_clocks_from_before_a_restart(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    live = await start(make_daemon, clock)
    answered = (await message(live, "email", "ann@example.org"))["conversation_id"]
    await message(live, "email", "bob@example.org")
    await message(live, "chat", "v-1")
    await timing(live)
    state = live.daemon.state_dir
    await live.daemon.stop()
    clock.now = T0 + 2 * 3600  # two hours later, after a restart
    again = await start(make_daemon, clock, state_dir=state)
    await reply(again, answered)
    await timing(again)  # the answer is read
    clock.now += 6  # the gauge is refreshed every 5 s of the daemon's clock
    await timing(again)
    text = await metrics(again)
    assert 'helpline_first_response_waiting{age="1h_to_4h",channel="email"} 1.0' in text
    assert 'helpline_first_response_waiting{age="1h_to_4h",channel="chat"} 1.0' in text
    assert 'helpline_first_response_waiting{age="under_1m",channel="email"} 0.0' in text


async def test_the_timer_fires_on_its_own(make_daemon: Callable[..., Any]) -> None:
    live = await make_daemon('[first_response.targets]\nchat = "0.3s"\n')
    conv = (await message(live, "chat", "visitor-9"))["conversation_id"]
    for _ in range(100):  # no tick(): the tracker's own timer
        found = [e for e in await live.stream() if e["type"] == BREACHED]
        if found:
            break
        await asyncio.sleep(0.05)
    assert [e["subject"] for e in found] == [conv]


async def test_a_trusted_relays_received_time_bounds_the_senders_date(
    make_daemon: Callable[..., Any],
) -> None:
    """Through a real SMTP session: a Date in the future is a lie our own relay's Received
    field corrects; without a Date that Received time is the customer's time; a Received
    field from a host we do not trust changes nothing."""
    port = free_port()
    live = await make_daemon(
        smtp_section(port, extra='trusted_authserv_ids = ["mx.helpline.test"]\n')
    )
    now = time.time()

    def relayed(by: str, ago: float) -> str:
        return f"from mail.example.org by {by} with ESMTPS id 4Xy; {formatdate(now - ago)}"

    cases = {
        "ann@example.org": {
            "Date": formatdate(now + 3600),
            "Received": relayed("mx.helpline.test", 120),
        },
        "bob@example.org": {"Date": None, "Received": relayed("mx.helpline.test", 180)},
        "cy@example.org": {
            "Date": formatdate(now + 3600),
            "Received": relayed("mx.elsewhere.test", 120),
        },
    }
    for n, (sender, fields) in enumerate(cases.items()):
        msg = mail(sender, "support@example.com", f"Order {n}", "Where is my parcel? It is late.")
        del msg["Date"]
        if fields["Date"]:
            msg["Date"] = fields["Date"]
        raw = f"Received: {fields['Received']}\r\n".encode() + msg.as_bytes(policy=SMTP_POLICY)
        await asyncio.to_thread(send, port, raw, ["support@example.com"], sender)
    for event in await smtp_inbound(live, 3):
        await live.post(
            f"/v1/conversations/{event['subject']}/replies",
            {"text": "On it", "author": {"kind": "human"}},
        )
    await live.daemon.first_response.tick()
    stages = {
        e["data"]["contact_id"]: e["data"]["stages"]["customer_to_accepted"]
        for e in await live.stream()
        if e["type"] == MET
    }
    by_contact = {
        e["data"]["from"]["email"]: e["data"]["contact_id"] for e in await smtp_inbound(live, 3)
    }
    ann, bob, cy = (stages[by_contact[s]] for s in cases)
    assert 119 <= ann <= 125  # the relay's time, not the Date an hour ahead
    assert 179 <= bob <= 185  # no Date: the relay's time
    assert cy == 0.0  # an untrusted Received is ignored: the future Date clamps to accepted


async def test_a_store_from_before_the_clocks_is_not_replayed(
    make_daemon: Callable[..., Any], clock: Clock
) -> None:
    """An upgrade: events written before the tracker existed start no clocks (history is
    not replayed at start); what arrives afterwards is clocked as usual."""
    live = await start(make_daemon, clock)
    await message(live, "email", "old@example.org")
    state = live.daemon.state_dir
    await live.daemon.stop()
    with sqlite3.connect(state / "helpline.db") as db:  # as an older helpline left it
        db.execute("DELETE FROM first_response_clocks")
        db.execute("DELETE FROM cursors WHERE name = 'first_response'")
    clock.now = T0 + 600
    again = await start(make_daemon, clock, state_dir=state)
    conv = (await message(again, "email", "new@example.org"))["conversation_id"]
    clock.now = T0 + 1000
    events = await timing(again)
    assert [(e["type"], e["subject"]) for e in events] == [(BREACHED, conv)]
