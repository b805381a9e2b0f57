"""A conversation a customer's email opens gets one automatic acknowledgement, sent by mail
through a real SMTP sink: once per address per window (across restarts), never to mail no
human wrote, to our own addresses or to an address that bounces, and never as a human reply."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from email.message import Message
from typing import Any

from tests.conftest import LiveDaemon, until
from tests.integration.test_bounces import automatic, dsn, replied
from tests.integration.test_outbound import Relay, daemon_with_mail, relay
from tests.integration.test_smtp import inbound, mail, send

__all__ = ["relay"]

ACK = 'auto_ack = true\nauto_ack_window = "1d"\n'
REOPEN = '[conversations]\nreopen_window = "1h"\n'  # a new conversation after an hour


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def writes(port: int, sender: str, subject: str, **headers: str) -> None:
    msg = mail(sender, "support@example.com", subject, f"{subject}, please help.", **headers)
    await asyncio.to_thread(send, port, msg, ["support@example.com"])


def sent_to(sink: Relay) -> list[str]:
    return [str(m["To"]) for m in sink.received]


async def acks_in_stream(live: LiveDaemon) -> list[dict[str, Any]]:
    return [
        e
        for e in await live.stream()
        if e["type"] == "helpline.message.outbound.v1" and e["data"]["auto_ack"]
    ]


async def test_a_new_conversation_gets_one_acknowledgement(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    live, port = await daemon_with_mail(make_daemon, relay_port, out=ACK)
    first_id = "<c1@customer.example>"
    await writes(port, "Ann <ann@example.org>", "Printer on fire", message_id=first_id)
    await until(lambda: len(sink.received) == 1)
    ack: Message = sink.received[0]
    (first,) = await inbound(live, 1)
    ticket = f"[#HL-{first['data']['conversation_number']}]"
    assert ack["From"] == "support@example.com" and ack["To"] == "ann@example.org"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["Subject"] == f"Re: Printer on fire {ticket}"
    assert ack["In-Reply-To"] == "<c1@customer.example>"
    assert ack["References"] == "<c1@customer.example>"
    body = ack.get_body(("plain",))
    assert body is not None and ticket in body.get_content()

    # In the stream agents see what the customer was told, by a bot: not a human answer.
    (event,) = await acks_in_stream(live)
    assert event["subject"] == first["subject"]
    assert event["data"]["author"]["kind"] == "bot"
    assert ack["Message-ID"] == f"<{event['id']}@helpline.test>"

    # The customer answers the acknowledgement: it threads back, and earns no second one.
    answer = mail(
        "ann@example.org",
        "support@example.com",
        str(ack["Subject"]),
        "It is still smoking",
        in_reply_to=str(ack["Message-ID"]),
    )
    await asyncio.to_thread(send, port, answer, ["support@example.com"])
    assert (await inbound(live, 2))[1]["subject"] == first["subject"]
    # An agent's answer is an ordinary reply, not marked automatic.
    reply = await replied(live, sink, first, "A technician is on the way.")
    assert reply["Auto-Submitted"] is None and reply["Subject"] == f"Re: Printer on fire {ticket}"
    assert sent_to(sink) == ["ann@example.org", "ann@example.org"]
    assert len(await acks_in_stream(live)) == 1
    # Erasing Ann forgets that she was acknowledged too (her address is personal data).
    await live.post(f"/v1/contacts/{first['data']['contact_id']}/erase", None)
    with sqlite3.connect(live.daemon.store.path) as db:
        assert db.execute("SELECT address FROM auto_acks").fetchall() == []


async def test_at_most_one_per_address_per_window_across_a_restart(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    clock = Clock()
    live, port = await daemon_with_mail(make_daemon, relay_port, out=ACK, core=REOPEN, clock=clock)
    await writes(port, "ann@example.org", "Invoice missing")
    await until(lambda: len(sink.received) == 1)

    state = live.daemon.state_dir
    await live.daemon.stop()
    clock.now += 2 * 3600  # past the reopen window, within the acknowledgement window
    live, port = await daemon_with_mail(
        make_daemon, relay_port, out=ACK, core=REOPEN, clock=clock, state_dir=state
    )
    await writes(port, "ann@example.org", "Another question")
    await writes(port, "bob@example.org", "Bob's question")  # acknowledged after Ann's turn
    await until(lambda: len(sink.received) == 2)
    opened = [e for e in await live.stream() if e["type"] == "helpline.conversation.opened.v1"]
    assert len(opened) == 3  # Ann's second mail did open a new conversation
    assert sent_to(sink) == ["ann@example.org", "bob@example.org"]

    clock.now += 86400  # the window has passed: Ann's next new conversation is acknowledged
    await writes(port, "ann@example.org", "A third matter")
    await until(lambda: len(sink.received) == 3)
    assert sent_to(sink)[2] == "ann@example.org"
    assert len(await acks_in_stream(live)) == 3


async def test_automatic_mail_and_our_own_addresses_are_never_acknowledged(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    live, port = await daemon_with_mail(make_daemon, relay_port, out=ACK)
    await writes(port, "away@example.net", "Out of office", auto_submitted="auto-replied")
    await writes(port, "news@shop.example", "Summer sale", precedence="bulk")
    await writes(port, "Support <support@example.com>", "Loop?")
    bounce = mail("MAILER-DAEMON@mx.example.net", "support@example.com", "Undelivered", "x")
    await asyncio.to_thread(send, port, bounce, ["support@example.com"], "")
    await writes(port, "bob@example.org", "A real question")
    await until(lambda: len(sink.received) == 1)
    await inbound(live, 1)
    assert sent_to(sink) == ["bob@example.org"]
    assert [e["data"]["from"]["email"] for e in await inbound(live, 1)] == ["bob@example.org"]


async def test_an_address_marked_failing_gets_no_acknowledgement(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    """The sender was behind (its relay was down, say) when Ann wrote again and a bounce of
    our earlier reply came in after her mail: her new conversation is not acknowledged."""
    sink, relay_port = relay
    clock = Clock()
    live, port = await daemon_with_mail(make_daemon, relay_port, out=ACK, core=REOPEN, clock=clock)
    await writes(port, "ann@example.org", "Broken login")
    (first,) = await inbound(live, 1)
    await until(lambda: len(sink.received) == 1)  # the acknowledgement
    reply = await replied(live, sink, first)
    clock.now += 86400 + 2 * 3600  # past both windows: Ann would be acknowledged again

    sender = live.daemon._supervisors["connectors.out"]
    await sender.stop()
    await writes(port, "ann@example.org", "Still broken")
    await inbound(live, 2)
    bounce = dsn(reply, "ann@example.org", "failed", "5.2.1", "550 5.2.1 mailbox disabled")
    await asyncio.to_thread(send, port, bounce, ["support@example.com"], "")
    await automatic(live, 1)
    await live.daemon._start_component(sender.spec)
    await writes(port, "bob@example.org", "Bob's question")  # acknowledged after Ann's turn
    await until(lambda: len(sink.received) == 3)
    assert sent_to(sink) == ["ann@example.org", "ann@example.org", "bob@example.org"]
    acks = [e["data"]["conversation_id"] for e in await acks_in_stream(live)]
    assert acks[0] == first["subject"] and len(acks) == 2  # Ann's first, and Bob's
