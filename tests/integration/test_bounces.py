"""A bounce of helpline's reply marks the customer's address failing until they write again."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from email.message import Message
from email.policy import SMTP as SMTP_POLICY
from typing import Any

from aiosmtpd.smtp import SMTP

from tests.conftest import LiveDaemon, free_port, until
from tests.integration.test_outbound import Relay, customer_writes, daemon_with_mail, relay
from tests.integration.test_smtp import inbound, mail, send

__all__ = ["relay"]

AUTOMATIC = "helpline.message.automatic.v1"


def dsn(returned: Message, recipient: str, action: str, status: str, diagnostic: str) -> bytes:
    """A delivery status notification as Postfix writes it, returning `returned`'s headers."""
    headers = returned.as_bytes(policy=SMTP_POLICY).split(b"\r\n\r\n", 1)[0].decode()
    boundary = "8F2E1C.1782000000/mx.example.net"
    title = "Undelivered Mail Returned to Sender" if action == "failed" else "Delayed Mail"
    text = f"""From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: {returned["From"]}
Subject: {title}
Date: Mon, 23 Nov 2026 10:00:05 +0000 (UTC)
Message-Id: <{status}.{recipient}@mx.example.net>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

<{recipient}>: {diagnostic}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 8F2E1C
Arrival-Date: Mon, 23 Nov 2026 10:00:04 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.customer.example
Diagnostic-Code: smtp; {diagnostic}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{headers}

--{boundary}--
"""
    return text.replace("\n", "\r\n").encode()


async def automatic(live: LiveDaemon, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        found[:] = [e for e in await live.stream() if e["type"] == AUTOMATIC]
        return len(found) >= count

    deadline = asyncio.get_running_loop().time() + 8
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "no automatic event"
        await asyncio.sleep(0.02)
    return found


async def email_handle(live: LiveDaemon, contact_id: str) -> dict[str, Any]:
    status, contact, _ = await live.get(f"/v1/contacts/{contact_id}")
    assert status == 200
    (handle,) = [h for h in contact["handles"] if h["kind"] == "email"]
    return dict(handle)


async def replied(
    live: LiveDaemon, sink: Relay, first: dict[str, Any], text: str = "We sent a technician."
) -> Message:
    """An agent's answer to `first`, as the customer's mail server was offered it."""
    before = len(sink.received)
    await live.post(f"/v1/conversations/{first['subject']}/replies", {"text": text})
    await until(lambda: len(sink.received) == before + 1)
    return sink.received[-1]


async def test_a_bounced_reply_marks_the_address_until_the_customer_writes_again(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    live, port = await daemon_with_mail(make_daemon, relay_port)
    first = await customer_writes(live, port)
    contact = first["data"]["contact_id"]
    reply = await replied(live, sink, first)
    assert (await email_handle(live, contact))["failing"] is None

    unknown = "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown"
    bounce = dsn(reply, "ann@example.org", "failed", "5.1.1", unknown)
    await asyncio.to_thread(send, port, bounce, ["support@example.com"], "")
    (event,) = await automatic(live, 1)
    assert event["subject"] == first["subject"]  # found by the returned headers' Message-ID
    assert event["data"]["kind"] == "bounce"
    assert event["data"]["failed_recipients"] == [
        {"address": "ann@example.org", "status": "5.1.1", "diagnostic": unknown, "permanent": True}
    ]
    handle = await email_handle(live, contact)
    assert handle["failing"]["reason"] == unknown
    assert handle["failing"]["status"] == "5.1.1"
    assert handle["failing"]["event_id"] == event["id"]
    assert handle["failing"]["since"] == event["data"]["accepted_at"]

    # The same mark survives a restart: it is in the store, not in memory.
    state = live.daemon.state_dir
    await live.daemon.stop()
    live, port = await daemon_with_mail(make_daemon, relay_port, state_dir=state)
    assert (await email_handle(live, contact))["failing"]["event_id"] == event["id"]

    # Ann writes again: her mailbox evidently works, and the mark is gone.
    again = mail("ann@example.org", "support@example.com", "Still smoking", "Any news?")
    await asyncio.to_thread(send, port, again, ["support@example.com"])
    await inbound(live, 2)
    assert (await email_handle(live, contact))["failing"] is None


async def test_a_delay_notice_is_recorded_but_marks_nothing(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    live, port = await daemon_with_mail(make_daemon, relay_port)
    first = await customer_writes(live, port)
    reply = await replied(live, sink, first)
    timeout = "connect to mx.customer.example[192.0.2.7]:25: Connection timed out"
    delay = dsn(reply, "ann@example.org", "delayed", "4.4.1", timeout)
    await asyncio.to_thread(send, port, delay, ["support@example.com"], "")
    (event,) = await automatic(live, 1)
    assert event["subject"] == first["subject"]  # agents see it on the conversation
    assert event["data"]["failed_recipients"] == []  # still being retried: not a failure
    assert (await email_handle(live, first["data"]["contact_id"]))["failing"] is None


async def test_a_bounce_can_mark_only_the_conversations_own_customer(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    """Anyone can write a bounce: one naming Ann's conversation cannot mark Bob's address."""
    sink, relay_port = relay
    live, port = await daemon_with_mail(make_daemon, relay_port)
    first = await customer_writes(live, port)
    bob = mail("bob@example.org", "support@example.com", "Other question", "Hello")
    await asyncio.to_thread(send, port, bob, ["support@example.com"], "bob@example.org")
    bob_event = (await inbound(live, 2))[1]
    reply = await replied(live, sink, first)
    forged = dsn(reply, "bob@example.org", "failed", "5.1.1", "550 5.1.1 User unknown")
    await asyncio.to_thread(send, port, forged, ["support@example.com"], "")
    (event,) = await automatic(live, 1)
    assert [r["address"] for r in event["data"]["failed_recipients"]] == ["bob@example.org"]
    assert (await email_handle(live, bob_event["data"]["contact_id"]))["failing"] is None
    assert (await email_handle(live, first["data"]["contact_id"]))["failing"] is None


async def test_a_bounce_without_a_delivery_report_is_recorded_without_marking(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    live, port = await daemon_with_mail(make_daemon, relay_port)
    first = await customer_writes(live, port)
    reply = await replied(live, sink, first)
    plain = mail(
        "MAILER-DAEMON@mail.oldhost.example",
        "support@example.com",
        f"failure notice: {reply['Subject']}",
        "I'm afraid I wasn't able to deliver your message to <ann@example.org>.\n"
        "Sorry, no mailbox here by that name. (#5.1.1)",
    )
    await asyncio.to_thread(send, port, plain, ["support@example.com"], "")
    (event,) = await automatic(live, 1)
    assert event["subject"] == first["subject"]  # by the ticket token in its subject
    assert event["data"]["failed_recipients"] == []
    assert (await email_handle(live, first["data"]["contact_id"]))["failing"] is None


async def test_mail_failing_dmarc_from_the_address_does_not_end_the_mark(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    """Only mail that is from the address shows it works: a DMARC fail is not."""
    sink, relay_port = relay
    trusted = 'trusted_authserv_ids = ["mx.example.com"]\n'
    live, port = await daemon_with_mail(make_daemon, relay_port, smtp=trusted)
    first = await customer_writes(live, port)
    reply = await replied(live, sink, first)
    bounce = dsn(reply, "ann@example.org", "failed", "5.2.1", "550 5.2.1 mailbox disabled")
    await asyncio.to_thread(send, port, bounce, ["support@example.com"], "")
    await automatic(live, 1)
    forged = mail(
        "ann@example.org",
        "support@example.com",
        "Please wire the refund elsewhere",
        "New account: DE00 9999",
        authentication_results="mx.example.com; dmarc=fail header.from=example.org",
    )
    await asyncio.to_thread(send, port, forged, ["support@example.com"])
    events = await inbound(live, 2)
    assert events[1]["data"]["sender_auth"] == "dmarc=fail"
    handle = await email_handle(live, first["data"]["contact_id"])
    assert handle["failing"]["reason"] == "550 5.2.1 mailbox disabled"


async def test_erasing_the_person_forgets_the_mark(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    live, port = await daemon_with_mail(make_daemon, relay_port)
    first = await customer_writes(live, port)
    reply = await replied(live, sink, first)
    bounce = dsn(reply, "ann@example.org", "failed", "5.1.1", "550 5.1.1 User unknown")
    await asyncio.to_thread(send, port, bounce, ["support@example.com"], "")
    await automatic(live, 1)
    status, _, _ = await live.post(f"/v1/contacts/{first['data']['contact_id']}/erase", None)
    assert status == 200
    with sqlite3.connect(live.daemon.store.path) as db:
        assert db.execute("SELECT address FROM email_failures").fetchall() == []


class RefusingRelay(Relay):
    """A relay that knows the recipient's mailbox is gone: 550 5.1.1 at RCPT."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown"


async def test_a_relay_refusing_the_address_marks_it_failing(
    make_daemon: Callable[..., Any],
) -> None:
    sink, relay_port = RefusingRelay(), free_port()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, hostname="relay.test"), "127.0.0.1", relay_port
    )
    try:
        live, port = await daemon_with_mail(make_daemon, relay_port)
        first = await customer_writes(live, port)
        await live.post(f"/v1/conversations/{first['subject']}/replies", {"text": "Hello Ann"})
        contact = first["data"]["contact_id"]
        for _ in range(160):
            handle = await email_handle(live, contact)
            if handle["failing"]:
                break
            await asyncio.sleep(0.05)
        assert handle["failing"]["status"] == "5.1.1"
        assert "User unknown" in handle["failing"]["reason"]
        failed = [e for e in await live.stream() if e["type"].endswith("delivery_failed.v1")]
        assert handle["failing"]["event_id"] == failed[0]["id"]
    finally:
        server.close()
        await server.wait_closed()
