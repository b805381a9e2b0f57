"""Auto-replies, bounces and our own mail never open a conversation and never get answered."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from tests.conftest import LiveDaemon
from tests.integration.test_smtp import mail, send, smtp

__all__ = ["smtp"]


async def all_events(live: LiveDaemon, settle: float = 0.4) -> list[dict[str, Any]]:
    await asyncio.sleep(settle)  # let the normalization after 250 finish
    return await live.stream()


def raw_rows(live: LiveDaemon) -> list[tuple[Any, ...]]:
    with sqlite3.connect(live.daemon.store.path) as db:
        return db.execute("SELECT state, event_id, error FROM raw_mail ORDER BY id").fetchall()


async def test_an_auto_reply_is_recorded_on_its_conversation(smtp: tuple[LiveDaemon, int]) -> None:
    live, port = smtp
    first = mail(
        "ann@example.org",
        "support@example.com",
        "Refund",
        "Please refund order 7",
        message_id="<r1@customer.example>",
    )
    await asyncio.to_thread(send, port, first, ["support@example.com"])
    away = mail(
        "ann@example.org",
        "support@example.com",
        "Out of Office: Refund",
        "I am away until Monday",
        message_id="<r2@customer.example>",
        in_reply_to="<r1@customer.example>",
        auto_submitted="auto-replied",
    )
    await asyncio.to_thread(send, port, away, ["support@example.com"])
    events = await all_events(live)
    kinds = [e["type"].removeprefix("helpline.") for e in events]
    assert kinds == ["conversation.opened.v1", "message.inbound.v1", "message.automatic.v1"]
    automatic = events[-1]
    assert automatic["subject"] == events[1]["subject"]  # on the conversation it answers
    assert automatic["data"]["kind"] == "auto_reply"
    assert automatic["data"]["reason"] == "Auto-Submitted: auto-replied"


async def test_a_bounce_naming_nothing_opens_nothing(smtp: tuple[LiveDaemon, int]) -> None:
    live, port = smtp
    bounce = mail(
        "MAILER-DAEMON@mx.elsewhere.example",
        "support@example.com",
        "Undelivered Mail Returned to Sender",
        "This is the mail system.",
    )
    await asyncio.to_thread(send, port, bounce, ["support@example.com"], "")
    assert await all_events(live) == []  # no contact, no conversation, nothing to answer
    ((state, event_id, note),) = raw_rows(live)
    assert (state, event_id) == ("done", None)
    assert "bounce" in note and "kept" in note  # the mail itself stays in the store


async def test_mail_from_our_own_address_is_not_a_customer(smtp: tuple[LiveDaemon, int]) -> None:
    live, port = smtp
    looped = mail(
        "Support <support@example.com>", "support@example.com", "Re: your request", "We are on it"
    )
    await asyncio.to_thread(send, port, looped, ["support@example.com"], "support@example.com")
    assert await all_events(live) == []
    ((state, _, note),) = raw_rows(live)
    assert state == "done" and "own_address" in note


async def test_out_of_office_subjects_without_headers_and_bulk_mail(
    smtp: tuple[LiveDaemon, int],
) -> None:
    live, port = smtp
    for msg in (
        mail("ann@example.org", "support@example.com", "Automatische Antwort: Frage", "Bin weg"),
        mail(
            "news@shop.example",
            "support@example.com",
            "Our summer sale",
            "50% off",
            precedence="bulk",
        ),
    ):
        await asyncio.to_thread(send, port, msg, ["support@example.com"])
    assert await all_events(live) == []
    notes = [row[2] for row in raw_rows(live)]
    assert "out-of-office subject" in notes[0] and "Precedence: bulk" in notes[1]


async def test_a_customer_mail_still_arrives(smtp: tuple[LiveDaemon, int]) -> None:
    live, port = smtp
    normal = mail(
        "ann@example.org",
        "support@example.com",
        "Question about my office move",
        "Can you change my address?",
    )
    await asyncio.to_thread(send, port, normal, ["support@example.com"])
    deadline = time.monotonic() + 5
    while not any(e["type"] == "helpline.message.inbound.v1" for e in await live.stream()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
