"""The first-response report (GET /v1/reports/first-response, `helpline report
first-response`) over clocks scripted with a controllable clock: exact nearest-rank
figures per channel, business hours, the waiting list, the channel and since filters,
refused parameters, and the command in its three formats against the daemon's port."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson

from gateway.calls import CallStep
from gateway.identity import Handles
from gateway.ingest import Inbound
from tests.conftest import REPO, TOKENS, LiveDaemon, free_port

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
REPORT = "/v1/reports/first-response"
BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def message(
    live: LiveDaemon, channel: str, who: str, name: str | None = None, **kw: Any
) -> tuple[str, str]:
    """A customer's message: (conversation id, contact id)."""
    handles = Handles(visitor_id=who) if channel == "chat" else Handles(email=who)
    item = Inbound(
        channel=channel,  # type: ignore[arg-type]
        source="/connectors/test",
        handles=handles,
        text="Where is my order 4711?",
        name=name,
        **kw,
    )
    ack = await live.daemon.ingestor.ingest(item)
    return ack.conversation_id, ack.contact_id


async def reply(live: LiveDaemon, conversation: str) -> None:
    status, answer, _ = await live.post(
        f"/v1/conversations/{conversation}/replies",
        {"text": "On it", "author": {"kind": "human", "name": "Sam"}},
    )
    assert status == 201, answer


async def call(live: LiveDaemon, call_id: str, phase: str, at: float, **kw: Any) -> None:
    await live.daemon.ingestor.ingest_call(
        CallStep(
            source="/connectors/pbx",
            call_id=call_id,
            phase=phase,  # type: ignore[arg-type]
            direction="inbound",
            phone="+49 30 1234567",
            at=datetime.fromtimestamp(at, UTC),
            **kw,
        )
    )


async def report(live: LiveDaemon, query: str = "") -> dict[str, Any]:
    await live.daemon.first_response.tick()
    status, body, _ = await live.get(REPORT + query)
    assert status == 200, body
    return dict(body)


async def answered(live: LiveDaemon, clock: Clock, script: list[tuple[float, str]]) -> None:
    """Answer each conversation at its time, in time order."""
    for at, conversation in sorted(script):
        clock.now = at
        await reply(live, conversation)


def figures(channel: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(channel[k] for k in ("count", "p50", "p90", "p99", "mean", "within_target"))


async def scripted(make_daemon: Callable[..., Any], clock: Clock) -> LiveDaemon:
    """Clocks on four channels, answered or waiting, all started on 23 November 2026.

    email: 20 answered after 15 s, 30 s, ... 300 s (12 within the 3 min target), two waiting
    chat: answered after 5, 12 and 20 s (target 13 s), the customers' own times 2, 4, 6 s
    voice: a call answered by a person after 3 s; webform: nothing; api: one waiting
    """
    live: LiveDaemon = await make_daemon(clock=clock)
    script: list[tuple[float, str]] = []
    for i in range(1, 21):
        conversation, _ = await message(live, "email", f"e{i}@example.org")
        script.append((T0 + 15 * i, conversation))
    for latency, own in ((5, 2), (12, 4), (20, 6)):
        sent = datetime.fromtimestamp(T0 - own, UTC)
        conversation, _ = await message(live, "chat", f"visitor-{latency}", sent_at=sent)
        script.append((T0 + latency, conversation))
    await call(live, "call-1", "ringing", T0)
    clock.now = T0 + 3
    await call(live, "call-1", "answered", T0 + 3, answered_by="human", agent="Sam")
    await answered(live, clock, [s for s in script if s[0] <= T0 + 50])
    clock.now = T0 + 50
    await message(live, "email", "zoe@example.org", "Zoe Waits")
    clock.now = T0 + 100
    await message(live, "api", "api@example.org", "Api Person")
    await answered(live, clock, [s for s in script if s[0] > T0 + 50])
    clock.now = T0 + 350
    await message(live, "email", "late@example.org", "Late Larry")
    clock.now = T0 + 400
    return live


async def test_exact_figures_per_channel(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await scripted(make_daemon, clock)
    body = await report(live)
    assert body["since"] == "2026-11-16T10:06:40.000Z"  # 7 days back from now
    assert body["until"] == "2026-11-23T10:06:40.000Z"
    assert body["business_hours"] is False
    channels = body["channels"]
    assert list(channels) == ["email", "webform", "chat", "voice", "api"]
    email, chat = channels["email"], channels["chat"]
    # Nearest rank over 15, 30, ... 300: p50 the 10th, p90 the 18th, p99 the 20th value.
    assert figures(email) == (20, 150.0, 270.0, 300.0, 157.5, 0.6)
    assert (email["target"], email["calendar"]) == (180.0, None)
    assert email["breaches"] == 8 + 1  # 8 answered late, Zoe waits past the target
    assert figures(chat) == (3, 12.0, 20.0, 20.0, 37 / 3, 2 / 3)
    assert chat["breaches"] == 1 and chat["target"] == 13.0
    assert figures(channels["voice"]) == (1, 3.0, 3.0, 3.0, 3.0, 1.0)
    assert figures(channels["webform"]) == (0, None, None, None, None, None)
    assert channels["webform"]["stages"] == {
        "customer_to_accepted": None,
        "accepted_to_backend": {},  # no backend configured
        "accepted_to_reply": None,
    }
    assert channels["webform"]["breaches"] == 0
    assert figures(channels["api"])[0] == 0 and channels["api"]["breaches"] == 1
    # Where the time went: the customers' own clocks, then the team's.
    assert chat["stages"] == {
        "customer_to_accepted": {"p50": 4.0, "p90": 6.0, "mean": 4.0},
        "accepted_to_backend": {},
        "accepted_to_reply": {"p50": 12.0, "p90": 20.0, "mean": 37 / 3},
    }
    assert email["stages"]["customer_to_accepted"] is None  # no Date was given
    assert email["stages"]["accepted_to_reply"] == {"p50": 150.0, "p90": 270.0, "mean": 157.5}
    assert channels["voice"]["stages"]["customer_to_accepted"] == {
        "p50": 0.0,
        "p90": 0.0,
        "mean": 0.0,
    }
    assert body["daily"] == [
        {
            "date": "2026-11-23",
            "channel": name,
            "count": c["count"],
            "p50": c["p50"],
            "p90": c["p90"],
            "p99": c["p99"],
            "within_target": c["within_target"],
        }
        for name, c in sorted(channels.items())
        if c["count"]
    ]
    # The waiting: oldest first, their age now, their names.
    waiting = email["waiting"]
    assert waiting["count"] == 2
    assert [(w["name"], w["age"], w["breached"], w["started_at"]) for w in waiting["oldest"]] == [
        ("Zoe Waits", 350.0, True, "2026-11-23T10:00:50.000Z"),
        ("Late Larry", 50.0, False, "2026-11-23T10:05:50.000Z"),
    ]
    assert channels["api"]["waiting"]["oldest"][0]["age"] == 300.0
    assert channels["chat"]["waiting"] == {"count": 0, "oldest": []}


async def test_business_hours_measure_in_the_calendar(make_daemon: Callable[..., Any]) -> None:
    # Friday 27 March 2026, 16:59 in Berlin; answered Monday 09:01, after the DST change.
    friday = datetime(2026, 3, 27, 16, 59, tzinfo=BERLIN).timestamp()
    monday = datetime(2026, 3, 30, 9, 1, tzinfo=BERLIN).timestamp()
    office = (
        '[first_response.business_hours]\nemail = "office"\n'
        '[business_hours.office]\ntimezone = "Europe/Berlin"\n'
        + "".join(
            f'{d} = ["09:00-17:00"]\n'
            for d in ("monday", "tuesday", "wednesday", "thursday", "friday")
        )
    )
    clock = Clock(friday)
    live = await make_daemon(office, clock=clock)
    mail, _ = await message(live, "email", "cara@example.org")
    chat, _ = await message(live, "chat", "visitor-cara")
    clock.now = friday + 9
    await reply(live, chat)
    clock.now = monday
    await reply(live, mail)
    clock.now = monday + 60
    real = monday - friday
    assert real == 63 * 3600 + 120

    body = await report(live)
    email = body["channels"]["email"]
    assert figures(email) == (1, real, real, real, real, 1.0)  # judged in the calendar
    assert email["calendar"] == "office"
    body = await report(live, "?business_hours=true")
    assert body["business_hours"] is True
    email = body["channels"]["email"]
    assert figures(email) == (1, 120.0, 120.0, 120.0, 120.0, 1.0)
    assert email["stages"]["accepted_to_reply"] == {"p50": real, "p90": real, "mean": real}
    assert figures(body["channels"]["chat"]) == (1, 9.0, 9.0, 9.0, 9.0, 1.0)  # real time
    assert body["daily"] == [
        {
            "date": "2026-03-27",
            "channel": "chat",
            "count": 1,
            "p50": 9.0,
            "p90": 9.0,
            "p99": 9.0,
            "within_target": 1.0,
        },
        {
            "date": "2026-03-30",
            "channel": "email",
            "count": 1,
            "p50": 120.0,
            "p90": 120.0,
            "p99": 120.0,
            "within_target": 1.0,
        },
    ]
    assert (await report(live, "?business_hours=0"))["channels"]["email"]["p50"] == real


async def test_the_oldest_waiting_with_names_and_erased_ones_without(
    make_daemon: Callable[..., Any],
) -> None:
    clock = Clock()
    live = await make_daemon(clock=clock)
    contacts = []
    for i in range(12):
        clock.now = T0 + i
        contacts.append((await message(live, "webform", f"w{i}@example.org", f"Customer {i}"))[1])
    clock.now = T0 + 185  # the first six (started at T0 .. T0 + 5) are past the 3 min target
    status, _, _ = await live.post(f"/v1/contacts/{contacts[1]}/erase", {"reason": "asked"})
    assert status == 200
    waiting = (await report(live))["channels"]["webform"]["waiting"]
    assert waiting["count"] == 12
    oldest = waiting["oldest"]
    assert [w["age"] for w in oldest] == [185.0 - i for i in range(10)]  # at most 10
    assert [w["contact_id"] for w in oldest] == contacts[:10]
    assert [w["name"] for w in oldest] == [None if i == 1 else f"Customer {i}" for i in range(10)]
    assert [w["breached"] for w in oldest] == [True] * 6 + [False] * 4
    assert [w["conversation_number"] for w in oldest] == list(range(1, 11))
    assert (await report(live))["channels"]["webform"]["breaches"] == 6


async def test_the_channel_filter(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await scripted(make_daemon, clock)
    body = await report(live, "?channel=chat")
    assert list(body["channels"]) == ["chat"]
    assert figures(body["channels"]["chat"]) == (3, 12.0, 20.0, 20.0, 37 / 3, 2 / 3)
    assert [d["channel"] for d in body["daily"]] == ["chat"]
    body = await report(live, "?channel=email&business_hours=true")
    assert list(body["channels"]) == ["email"]
    assert body["channels"]["email"]["waiting"]["count"] == 2


async def test_the_since_filter(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await make_daemon(clock=clock)
    for day, latency in ((0, 5), (1, 10), (3, 20)):  # answered on 23, 24 and 26 November
        clock.now = T0 + day * DAY
        conversation, _ = await message(live, "chat", f"visitor-day{day}")
        clock.now += latency
        await reply(live, conversation)
    clock.now = T0 + 3 * DAY + 100

    def counted(body: dict[str, Any]) -> list[tuple[str, int, float]]:
        return [(d["date"], d["count"], d["p50"]) for d in body["daily"]]

    every = await report(live)
    assert figures(every["channels"]["chat"])[:2] == (3, 10.0)
    assert counted(every) == [
        ("2026-11-23", 1, 5.0),
        ("2026-11-24", 1, 10.0),
        ("2026-11-26", 1, 20.0),
    ]
    three = await report(live, "?since=3d")  # from 23 November 10:01:40: the first is out
    assert three["since"] == "2026-11-23T10:01:40.000Z"
    assert counted(three) == [("2026-11-24", 1, 10.0), ("2026-11-26", 1, 20.0)]
    assert figures(three["channels"]["chat"]) == (2, 10.0, 20.0, 20.0, 15.0, 1 / 2)
    assert counted(await report(live, "?since=1m")) == []  # the last answer was 80 s ago
    # An instant, with its offset: the second answer was at 10:00:10 on 24 November (UTC).
    at = "?since=" + quote("2026-11-24T11:00:10+01:00")
    assert counted(await report(live, at)) == [("2026-11-24", 1, 10.0), ("2026-11-26", 1, 20.0)]
    later = await report(live, "?since=2026-11-24T10:00:10.5Z")
    assert later["since"] == "2026-11-24T10:00:10.500Z"
    assert counted(later) == [("2026-11-26", 1, 20.0)]


async def test_bad_parameters_are_refused_by_name(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await make_daemon(clock=clock)
    cases = {
        "since=soon": "since",
        "since=0s": "since",
        "since=-5m": "since",
        "since=2026-11-20T10:00:00": "since",  # no offset
        "since=2026-11-24T00:00:00Z": "since",  # after now
        "channel=fax": "channel",
        "business_hours=maybe": "business_hours",
    }
    for query, field in cases.items():
        status, body, headers = await live.get(f"{REPORT}?{query}")
        assert status == 400, query
        assert headers["Content-Type"] == "application/problem+json"
        assert body["type"] == "urn:helpline:problem:invalid-request"
        assert [e["field"] for e in body["errors"]] == [field], query
    status, body, _ = await live.get(REPORT, token=None)
    assert status == 401


def words(text: str) -> list[str]:
    return text.split()


async def helpline(*args: str) -> tuple[int, str, str]:
    """The command, as a process, while this loop serves the daemon it talks to."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_report_command_in_three_formats(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await scripted(make_daemon, clock)
    expected = await report(live)
    target = ["report", "first-response", "--url", live.url, "--token", TOKENS["main"]]

    code, out, err = await helpline(*target, "--format", "json")
    assert code == 0, err
    assert orjson.loads(out) == expected

    code, out, err = await helpline(*target, "--format", "csv", "--since", "1d")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["channel"] for r in rows] == ["email", "webform", "chat", "voice", "api"]
    email = rows[0]
    assert [email[k] for k in ("count", "p50", "p90", "p99")] == words("20 150.0 270.0 300.0")
    assert (email["mean"], email["within_target"], email["breaches"]) == ("157.5", "0.6", "9")
    assert (email["waiting.count"], email["waiting.oldest.age"]) == ("2", "350.0")
    assert (email["target"], email["calendar"]) == ("180.0", "")
    assert rows[1]["p50"] == "" and rows[1]["waiting.oldest.age"] == ""
    assert rows[2]["stages.customer_to_accepted.p50"] == "4.0"
    assert out.splitlines()[0].split(",")[:4] == ["channel", "target", "calendar", "count"]

    code, out, err = await helpline(*target, "--channel", "email", "--business-hours")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "First response from 2026-11-16T10:06:40.000Z to 2026-11-23T10:06:40.000Z, "
        "in business hours where a channel counts them"
    )
    assert lines[2].split() == (
        words("channel target count p50 p90 p99 mean within breaches waiting oldest wait")
    )
    assert lines[3].split() == words("email 3m00s 20 2m30s 4m30s 5m00s 2m38s 60.0% 9 2 5m50s")
    assert len(lines) == 4
    code, out, err = await helpline(*target)
    assert code == 0, err
    table = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
    assert table["chat"] == words("chat 13s 3 12s 20s 20s 12.3s 66.7% 1 0 -")
    assert table["webform"] == words("webform 3m00s 0 - - - - - 0 0 -")
    assert out.splitlines()[0].endswith(", in real time")
    # Fixed widths: each column's cells end where its heading does.
    header, *cells = out.splitlines()[2:]
    end = header.index("p90") + len("p90")
    assert [line[:end].split()[-1] for line in cells] == ["4m30s", "-", "20s", "3s", "-"]


async def test_the_report_command_refusals(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await make_daemon(clock=clock)
    target = ["report", "first-response", "--url", live.url, "--token", TOKENS["main"]]
    code, _, err = await helpline(*target, "--since", "yesterday")
    assert code == 2 and "since" in err and "400" in err
    code, _, err = await helpline(*target[:-1], "wrong-token")
    assert code == 1 and "401" in err
    nobody = f"http://127.0.0.1:{free_port()}"
    code, out, err = await helpline("report", "first-response", "--url", nobody, "--token", "x")
    assert code == 1 and out == ""
    assert "cannot reach the daemon" in err
