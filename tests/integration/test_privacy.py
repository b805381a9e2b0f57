"""Erasure on request, retention by age, and the bounded idempotency window."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from tests.conftest import LiveDaemon, free_port, message, until
from tests.integration.test_smtp import inbound, mail, send, smtp_section


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def until_met(live: LiveDaemon, count: int) -> None:
    for _ in range(200):
        events = await live.stream()
        if sum(e["type"] == "helpline.first_response.met.v1" for e in events) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no first_response.met event")


async def test_erasing_a_person_removes_content_and_keeps_tombstones(live: LiveDaemon) -> None:
    ann = {"email": "ann@example.org", "phone": "+4930555666", "name": "Ann Lee"}
    _, a, _ = await live.post(
        "/v1/messages", message(1, text="my IBAN is DE00 1234", **{"from": ann})
    )
    await live.post(
        f"/v1/conversations/{a['conversation_id']}/replies",
        {"text": "Thanks Ann, noted your IBAN DE00 1234"},
    )
    _, other, _ = await live.post(
        "/v1/messages", message(2, **{"from": {"email": "bob@example.org"}})
    )
    # The reply stops Ann's first-response clock: its met event is hers too.
    await until_met(live, 1)
    before = await live.stream()

    status, erased, _ = await live.post(
        f"/v1/contacts/{a['contact_id']}/erase", {"reason": "GDPR request 2026-11"}
    )
    assert status == 200
    assert erased["contact"]["handles"] == [] and erased["contact"]["name"] is None
    assert erased["contact"]["erased_at"] is not None

    after = await live.stream()
    assert [e["offset"] for e in after[: len(before)]] == [e["offset"] for e in before]
    text = "".join(str(e["data"]) for e in after)
    assert "IBAN" not in text and "ann@example.org" not in text and "Ann Lee" not in text
    inbound = next(e for e in after if e["id"] == a["event_id"])
    assert inbound["data"]["erased"] is True and inbound["data"]["text"] == ""
    assert inbound["data"]["from"] == {
        "email": None,
        "phone": None,
        "name": None,
        "visitor_id": None,
    }
    reply = next(e for e in after if e["type"] == "helpline.message.outbound.v1")
    assert reply["data"]["erased"] is True
    event = after[-1]
    assert event["type"] == "helpline.contact.erased.v1"
    assert event["data"]["events_erased"] == 4 and event["data"]["reason"] == "GDPR request 2026-11"
    # Bob is untouched, and Ann's handles find nobody now.
    bob = next(e for e in after if e["id"] == other["event_id"])
    assert bob["data"]["from"]["email"] == "bob@example.org"
    status, _, _ = await live.get("/v1/contacts?handle=ann@example.org")
    assert status == 404
    # Writing again later makes a new, empty-history contact: nothing comes back.
    _, again, _ = await live.post("/v1/messages", message(3, **{"from": ann}))
    assert again["contact_id"] != a["contact_id"]


async def test_erasure_covers_everyone_merged_into_the_person(live: LiveDaemon) -> None:
    _, a, _ = await live.post("/v1/messages", message(1, **{"from": {"email": "ann@x.org"}}))
    _, b, _ = await live.post("/v1/messages", message(2, **{"from": {"phone": "+4930111222"}}))
    await live.post(
        "/v1/messages",
        message(3, **{"from": {"email": "ann@x.org", "phone": "+4930111222"}}),
        token="crm",
    )
    status, _, _ = await live.post(f"/v1/contacts/{b['contact_id']}/erase", None)
    assert status == 200
    event = (await live.stream())[-1]
    assert sorted(event["data"]["erased_ids"]) == sorted([a["contact_id"], b["contact_id"]])
    merged = next(e for e in await live.stream() if e["type"] == "helpline.contact.merged.v1")
    assert merged["data"]["handles"] == []


async def test_retention_tombstones_old_content(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await make_daemon('[retention]\nmessage_content = "30d"\n', clock=clock)
    _, old, _ = await live.post("/v1/messages", message(1, text="old secret"))
    clock.now += 20 * 86400
    _, recent, _ = await live.post("/v1/messages", message(2, text="recent question"))
    clock.now += 15 * 86400  # the first is 35 days old, the second 15
    await live.daemon.sweep()
    events = {e["id"]: e for e in await live.stream()}
    assert events[old["event_id"]]["data"]["erased"] is True
    assert events[old["event_id"]]["data"]["text"] == ""
    assert events[recent["event_id"]]["data"]["text"] == "recent question"
    clock.now += 20 * 86400
    await live.daemon.sweep()
    events = {e["id"]: e for e in await live.stream()}
    assert events[recent["event_id"]]["data"]["erased"] is True


async def test_idempotency_keys_expire_after_the_window(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await make_daemon('[ingest]\nidempotency_window = "2d"\n', clock=clock)
    key = {"Idempotency-Key": "order-1"}
    first = await live.post("/v1/messages", message(1), **key)
    clock.now += 86400
    assert (await live.post("/v1/messages", message(1), **key))[0] == 200  # still remembered
    async with live.http.get(live.url + "/metrics") as resp:
        text = await resp.text()
    assert "helpline_idempotency_keys 1.0" in text
    assert "helpline_idempotency_oldest_age_seconds 86400.0" in text
    clock.now += 2 * 86400
    await live.daemon.sweep()
    async with live.http.get(live.url + "/metrics") as resp:
        assert "helpline_idempotency_keys 0.0" in await resp.text()
    later = await live.post("/v1/messages", message(1), **key)
    assert later[0] == 201 and later[1]["event_id"] != first[1]["event_id"]


async def test_erasing_an_unknown_contact_is_404(live: LiveDaemon) -> None:
    status, problem, _ = await live.post("/v1/contacts/ct_nobody/erase", None)
    assert status == 404 and "ct_nobody" in problem["detail"]


def raw_mail(live: LiveDaemon) -> dict[str, str]:
    """Each raw mail's Subject line, with its state."""
    with sqlite3.connect(live.daemon.store.path) as db:
        rows = db.execute("SELECT state, raw FROM raw_mail ORDER BY id").fetchall()
    found = {}
    for state, raw in rows:
        subject = next(
            line for line in bytes(raw).decode().splitlines() if line.startswith("Subject:")
        )
        found[subject.removeprefix("Subject: ")] = state
    return found


async def test_retention_drops_finished_raw_mail_and_keeps_pending_and_failed(
    make_daemon: Callable[..., Any],
) -> None:
    """Mail kept as it arrived goes after [retention] raw_mail once it became an event;
    mail still waiting to be normalized, or parked as failed, stays whatever its age."""
    clock, port = Clock(), free_port()
    live = await make_daemon(smtp_section(port) + '[retention]\nraw_mail = "10d"\n', clock=clock)
    old = mail("ann@example.org", "support@example.com", "Old question", "Where is my order?")
    await asyncio.to_thread(send, port, old, ["support@example.com"])
    no_sender = b"To: support@example.com\r\nSubject: Nobody wrote this\r\n\r\nNo From.\r\n"
    await asyncio.to_thread(send, port, no_sender, ["support@example.com"])
    # Accepted but not normalized yet (a crash came in between): pending until the next start.
    await live.daemon.ingestor.accept_raw_mail(
        "mail", "bob@example.org", ["support@example.com"], b"Subject: Pending\r\n\r\nx\r\n", "k1"
    )
    await until(lambda: raw_mail(live).get("Nobody wrote this") == "failed")
    await inbound(live, 1)
    clock.now += 6 * 86400
    recent = mail("cy@example.org", "support@example.com", "Recent question", "Hello?")
    await asyncio.to_thread(send, port, recent, ["support@example.com"])
    await inbound(live, 2)
    clock.now += 5 * 86400  # the first three are 11 days old, the recent one 5

    await live.daemon.sweep()
    assert raw_mail(live) == {
        "Nobody wrote this": "failed",
        "Pending": "pending",
        "Recent question": "done",
    }
    subjects = [e["data"]["subject"] for e in await inbound(live, 2)]
    assert subjects == ["Old question", "Recent question"]  # the events keep what they said


async def test_erasing_a_person_drops_the_mail_they_sent(make_daemon: Callable[..., Any]) -> None:
    port = free_port()
    live = await make_daemon(smtp_section(port))
    for sender in ("ann@example.org", "bob@example.org"):
        msg = mail(sender, "support@example.com", f"From {sender}", "My IBAN is DE00 1234")
        await asyncio.to_thread(send, port, msg, ["support@example.com"])
    ann, _ = await inbound(live, 2)
    status, _, _ = await live.post(f"/v1/contacts/{ann['data']['contact_id']}/erase", None)
    assert status == 200
    assert raw_mail(live) == {"From bob@example.org": "done"}
