"""The smtp and lmtp connectors, spoken to over real sockets (smtplib and raw LMTP)."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import sqlite3
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import pytest

from connectors.mail import replies
from tests.conftest import LiveDaemon, auth, free_port


def mail(sender: str, to: str, subject: str, text: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = headers.pop("message_id", f"<{time.time_ns()}@customer.example>")
    msg["Date"] = "Sun, 22 Nov 2026 09:00:00 +0100"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return msg


def send(
    port: int, msg: EmailMessage | bytes, to: list[str], sender: str = "ann@example.org"
) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example.org")
        raw = msg if isinstance(msg, bytes) else msg.as_bytes(policy=SMTP_POLICY)  # CRLF
        return client.sendmail(sender, to, raw)


def smtp_section(port: int, kind: str = "smtp", extra: str = "") -> str:
    return (
        f'[connectors.mail]\ntype = "{kind}"\nlisten = "127.0.0.1:{port}"\n'
        'recipients = ["support@example.com", "@help.example.com"]\n' + extra
    )


async def inbound(live: LiveDaemon, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The email messages in the stream, once `count` of them have been normalized."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in await live.stream() if e["type"] == "helpline.message.inbound.v1"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)


@pytest.fixture
async def smtp(make_daemon: Callable[..., Any]) -> tuple[LiveDaemon, int]:
    port = free_port()
    return await make_daemon(smtp_section(port)), port


async def test_a_mail_becomes_a_customer_message(smtp: tuple[LiveDaemon, int]) -> None:
    live, port = smtp
    msg = mail(
        '"Ann Lee" <Ann@Example.ORG>',
        "support@example.com",
        "Invoice missing",
        "Hello, where is my invoice for March?",
        message_id="<m1@customer.example>",
    )
    refused = await asyncio.to_thread(send, port, msg, ["support@example.com"])
    assert refused == {}
    (event,) = await inbound(live, 1)
    data = event["data"]
    assert event["source"] == "/connectors/mail"
    assert data["channel"] == "email"
    assert data["from"]["email"] == "ann@example.org" and data["from"]["name"] == "Ann Lee"
    assert data["subject"] == "Invoice missing"
    assert data["text"].strip() == "Hello, where is my invoice for March?"
    assert data["message_id"] == "m1@customer.example"
    assert data["recipients"] == ["support@example.com"]
    assert data["sent_at"] == "2026-11-22T08:00:00.000Z"


async def test_only_support_addresses_are_accepted(smtp: tuple[LiveDaemon, int]) -> None:
    live, port = smtp
    msg = mail("ann@example.org", "someone@elsewhere.example", "relay?", "relay me")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await asyncio.to_thread(send, port, msg, ["someone@elsewhere.example"])
    code, text = info.value.recipients["someone@elsewhere.example"]
    assert code == 550 and b"support addresses only" in text
    # A domain pattern takes any address of that domain; a partly refused mail still arrives.
    refused = await asyncio.to_thread(
        send,
        port,
        mail("ann@example.org", "x", "s", "text body here"),
        ["billing@help.example.com", "nobody@example.com"],
    )
    assert set(refused) == {"nobody@example.com"}
    (event,) = await inbound(live, 1)
    assert event["data"]["recipients"] == ["billing@help.example.com"]


async def test_size_limit_is_advertised_and_enforced(make_daemon: Callable[..., Any]) -> None:
    port = free_port()
    await make_daemon(smtp_section(port, extra='max_message_size = "10KiB"\n'))

    def exchange() -> tuple[Any, Any]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example.org")
            advertised = client.esmtp_features.get("size")
            try:
                client.sendmail(
                    "ann@example.org",
                    ["support@example.com"],
                    mail("ann@example.org", "s", "big", "x" * 20_000).as_bytes(),
                )
            except smtplib.SMTPException as err:
                return advertised, err
            return advertised, None

    advertised, error = await asyncio.to_thread(exchange)
    assert advertised == str(10 * 1024)
    assert isinstance(error, smtplib.SMTPException) and "552" in str(error)


async def test_the_same_mail_twice_is_one_event_and_replies_thread(
    smtp: tuple[LiveDaemon, int],
) -> None:
    live, port = smtp
    first = mail(
        "ann@example.org",
        "support@example.com",
        "Broken",
        "The app crashes on start",
        message_id="<a1@customer.example>",
    )
    for _ in range(2):  # an MTA retrying after a lost answer
        await asyncio.to_thread(send, port, first, ["support@example.com"])
    reply = mail(
        "ann@example.org",
        "support@example.com",
        "Re: Broken",
        "Still crashing today",
        message_id="<a2@customer.example>",
        in_reply_to="<a1@customer.example>",
        references="<a1@customer.example>",
    )
    await asyncio.to_thread(send, port, reply, ["support@example.com"])
    events = await inbound(live, 2)
    await asyncio.sleep(0.2)
    events = await inbound(live, 2)
    assert [e["data"]["message_id"] for e in events] == [
        "a1@customer.example",
        "a2@customer.example",
    ]
    assert events[0]["subject"] == events[1]["subject"]  # the same conversation


async def test_a_reused_message_id_is_taken_counted_and_cannot_steal_the_thread(
    smtp: tuple[LiveDaemon, int],
) -> None:
    live, port = smtp
    original = mail(
        "ann@example.org",
        "support@example.com",
        "Refund",
        "Please refund order 7",
        message_id="<shared@customer.example>",
    )
    await asyncio.to_thread(send, port, original, ["support@example.com"])
    await inbound(live, 1)
    # Someone who saw the id (a Cc, a list archive) sends other content under it.
    forged = mail(
        "mallory@example.net",
        "support@example.com",
        "Hello",
        "Something else entirely",
        message_id="<shared@customer.example>",
    )
    await asyncio.to_thread(send, port, forged, ["support@example.com"], "mallory@example.net")
    reply = mail(
        "ann@example.org",
        "support@example.com",
        "Re: Refund",
        "Any news?",
        in_reply_to="<shared@customer.example>",
    )
    await asyncio.to_thread(send, port, reply, ["support@example.com"])
    first, second, third = await inbound(live, 3)
    assert second["data"]["from"]["email"] == "mallory@example.net"  # not silently dropped
    assert third["subject"] == first["subject"] != second["subject"]
    async with live.http.get(live.url + "/metrics", headers=auth()) as resp:
        metrics = await resp.text()
    assert 'helpline_message_id_conflicts_total{channel="email"} 1.0' in metrics


async def test_a_full_store_answers_451(make_daemon: Callable[..., Any]) -> None:
    port = free_port()
    live = await make_daemon(smtp_section(port) + "[store]\nmax_pending = 1\n")
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(tx: Any) -> None:
        entered.set()
        await release.wait()

    holder = asyncio.create_task(live.daemon.store.write(hold))
    await asyncio.wait_for(entered.wait(), 5)
    msg = mail("ann@example.org", "support@example.com", "s", "text of the message")
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asyncio.to_thread(send, port, msg, ["support@example.com"])
    assert info.value.smtp_code == 451
    release.set()
    await holder
    assert await asyncio.to_thread(send, port, msg, ["support@example.com"]) == {}


async def test_connections_per_client_are_limited(make_daemon: Callable[..., Any]) -> None:
    port = free_port()
    await make_daemon(smtp_section(port, extra="max_connections_per_client = 2\n"))

    def greetings() -> list[bytes]:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            return [s.recv(200) for s in socks]
        finally:
            for s in socks:
                s.close()

    got = await asyncio.to_thread(greetings)
    assert got[0].startswith(b"220") and got[1].startswith(b"220")
    assert got[2].decode().strip() == replies.TOO_MANY


async def test_lmtp_answers_once_per_recipient(make_daemon: Callable[..., Any]) -> None:
    port = free_port()
    live = await make_daemon(smtp_section(port, kind="lmtp"))
    body = mail("ann@example.org", "support@example.com", "Two desks", "For both teams please")

    def exchange() -> list[str]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            stream = s.makefile("rwb")

            def say(line: str) -> None:
                stream.write(line.encode() + b"\r\n")
                stream.flush()

            def reply() -> str:
                lines = []
                while True:
                    line = stream.readline().decode().rstrip()
                    lines.append(line)
                    if line[3:4] != "-":
                        return "\n".join(lines)

            reply()  # greeting
            say("LHLO mta.example.org")
            reply()
            say("MAIL FROM:<ann@example.org>")
            reply()
            for rcpt in ("support@example.com", "sales@help.example.com"):
                say(f"RCPT TO:<{rcpt}>")
                reply()
            say("DATA")
            reply()
            stream.write(body.as_bytes().replace(b"\n", b"\r\n") + b".\r\n")
            stream.flush()
            return [stream.readline().decode().rstrip() for _ in range(2)]

    answers = await asyncio.to_thread(exchange)
    assert answers == [
        replies.lmtp_accepted("support@example.com"),
        replies.lmtp_accepted("sales@help.example.com"),
    ]
    (event,) = await inbound(live, 1)
    assert event["data"]["recipients"] == ["support@example.com", "sales@help.example.com"]


async def test_mail_accepted_before_a_crash_is_normalized_at_start(
    make_daemon: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a previous run committed and answered 250 for, but never normalized: all of it,
    however many batches it takes."""
    import connectors.mail.normalize

    monkeypatch.setattr(connectors.mail.normalize, "RECOVERY_BATCH", 2)
    port = free_port()
    live = await make_daemon(smtp_section(port))
    raw_ids = []
    for n in range(5):
        raw = mail(
            f"bob{n}@example.org",
            "support@example.com",
            f"Left over {n}",
            "accepted just before the crash",
        ).as_bytes()
        raw_ids.append(
            await live.daemon.ingestor.accept_raw_mail(
                "connectors.mail",
                f"bob{n}@example.org",
                ["support@example.com"],
                raw,
                f"mid:left{n}@x:0",
            )
        )
    assert await inbound(live, 1, timeout=0.3) == []
    # A restart of the connector (as at the daemon's next start) picks them up.
    supervisor = live.daemon._supervisors["connectors.mail"]
    await supervisor.stop()
    await live.daemon._start_component(supervisor.spec)
    events = await inbound(live, 5)
    assert sorted(e["data"]["from"]["email"] for e in events) == [
        f"bob{n}@example.org" for n in range(5)
    ]
    with sqlite3.connect(live.daemon.store.path) as db:
        states = db.execute("SELECT state FROM raw_mail ORDER BY id").fetchall()
    assert states == [("done",)] * 5


async def test_a_mail_without_a_sender_is_kept_not_lost(smtp: tuple[LiveDaemon, int]) -> None:
    live, port = smtp
    raw = b"To: support@example.com\r\nSubject: who am I\r\n\r\nno From header here\r\n"
    assert await asyncio.to_thread(send, port, raw, ["support@example.com"]) == {}
    deadline = time.monotonic() + 5
    while True:
        with sqlite3.connect(live.daemon.store.path) as db:
            row = db.execute("SELECT state, error, raw FROM raw_mail").fetchone()
        if row[0] != "pending" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert row[0] == "failed" and "no sender address" in row[1]
    assert b"no From header here" in row[2]  # the message itself is kept for an operator
    assert await inbound(live, 1, timeout=0.2) == []


async def test_a_ticket_token_in_the_subject_finds_the_conversation(
    smtp: tuple[LiveDaemon, int],
) -> None:
    """A reply that lost its threading headers (forwarded by a colleague) still joins."""
    live, port = smtp
    first = mail("ann@example.org", "support@example.com", "Printer on fire", "It smokes")
    await asyncio.to_thread(send, port, first, ["support@example.com"])
    (opened,) = await inbound(live, 1)
    number = opened["data"]["conversation_number"]
    colleague = mail(
        "bob@example.org",
        "support@example.com",
        f"Fwd: [#HL-{number}] Printer on fire",
        "Ann asked me to add: now it beeps",
    )
    await asyncio.to_thread(send, port, colleague, ["support@example.com"], "bob@example.org")
    other = mail("bob@example.org", "support@example.com", "[#HL-999999] typo", "no such one")
    await asyncio.to_thread(send, port, other, ["support@example.com"], "bob@example.org")
    events = await inbound(live, 3)
    assert events[1]["subject"] == opened["subject"]  # joined by the token
    assert events[2]["subject"] != opened["subject"]  # an unknown number joins nothing


async def test_the_stream_shows_what_the_customer_wrote_now(smtp: tuple[LiveDaemon, int]) -> None:
    live, port = smtp
    reply = mail(
        "ann@example.org",
        "support@example.com",
        "Re: Broken",
        "It still crashes.\n\nOn Mon, 23 Nov 2026, Support <support@example.com> wrote:\n"
        "> Please update the app.\n\n-- \nAnn",
    )
    await asyncio.to_thread(send, port, reply, ["support@example.com"])
    (event,) = await inbound(live, 1)
    assert event["data"]["text"] == "It still crashes."
    assert event["data"]["quoted"].startswith("On Mon, 23 Nov 2026, Support")
    assert "> Please update the app." in event["data"]["quoted"]


async def test_dmarc_verdicts_of_a_trusted_relay(make_daemon: Callable[..., Any]) -> None:
    port = free_port()
    live = await make_daemon(
        smtp_section(port, extra='trusted_authserv_ids = ["mx.example.com"]\n')
    )
    first = mail(
        "ann@customer.example",
        "support@example.com",
        "Order",
        "where is it",
        message_id="<d1@customer.example>",
        authentication_results="mx.example.com; dmarc=pass header.from=customer.example",
    )
    await asyncio.to_thread(send, port, first, ["support@example.com"], "ann@customer.example")
    forged = mail(
        "eve@customer.example",
        "support@example.com",
        "Re: Order",
        "send it to me",
        in_reply_to="<d1@customer.example>",
        authentication_results="mx.example.com; dmarc=fail header.from=customer.example",
    )
    await asyncio.to_thread(send, port, forged, ["support@example.com"], "eve@customer.example")
    events = await inbound(live, 2)
    assert events[0]["data"]["sender_auth"] == "dmarc=pass"
    assert events[1]["data"]["sender_auth"] == "dmarc=fail"
    assert events[1]["subject"] != events[0]["subject"]  # a failed sender's reference is ignored


async def test_a_surprise_at_data_is_a_temporary_answer(
    smtp: tuple[LiveDaemon, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    live, port = smtp

    async def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("a bug, not the sender's fault")

    monkeypatch.setattr(live.daemon.ingestor, "accept_raw_mail", broken)
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asyncio.to_thread(
            send,
            port,
            mail("ann@example.org", "support@example.com", "s", "some text here"),
            ["support@example.com"],
        )
    assert info.value.smtp_code == 451  # the sender keeps the mail and retries


# -- the session over a raw socket: DATA as sent, limits, odd addresses -------------------


def _raw_mails(live: LiveDaemon) -> list[tuple[str | None, str, bytes]]:
    with sqlite3.connect(live.daemon.store.path) as db:
        rows = db.execute("SELECT mail_from, recipients, raw FROM raw_mail ORDER BY id").fetchall()
    return [(r[0], r[1], bytes(r[2])) for r in rows]


def _mail_commands(data: Any, sender: bytes = b"<ann@example.org>") -> list[Any]:
    return [
        b"MAIL FROM:" + sender + b"\r\n",
        b"RCPT TO:<support@example.com>\r\n",
        b"DATA\r\n",
        data,
    ]


async def test_data_is_kept_as_sent_dot_unstuffed(smtp: tuple[LiveDaemon, int]) -> None:
    from tests.integration.test_smtp_protocol import talk

    live, port = smtp
    head = b"From: ann@example.org\r\nSubject: dots\r\nMessage-ID: <dots@example.org>\r\n\r\n"
    sent = head + b"..leading dot\r\n...\r\n..\r\nbare\nLF\n.\nlines\r\n"
    stored = head + b".leading dot\r\n..\r\n.\r\nbare\nLF\n.\nlines\r\n"
    # The end marker and the lines cut across the socket's reads.
    pieces = [sent[:40], sent[40:-9], sent[-9:] + b".", b"\r\n"]
    got = await talk(port, [b"EHLO c.example\r\n", *_mail_commands(pieces), b"QUIT\r\n"])
    assert got[4] == "354 End data with <CR><LF>.<CR><LF>"
    assert got[5] == replies.ACCEPTED
    ((mail_from, _, raw),) = _raw_mails(live)
    assert raw == stored and mail_from == "ann@example.org"
    (event,) = await inbound(live, 1)
    assert event["data"]["text"].startswith(".leading dot\n..\n.\nbare\nLF\n.\nlines")


async def test_size_limit_exactly_at_and_just_over(make_daemon: Callable[..., Any]) -> None:
    """The limit counts the bytes between DATA and the end marker (dots as sent); past it
    552 after the whole mail was read, and the session goes on."""
    from tests.integration.test_smtp_protocol import body, talk

    port = free_port()
    live = await make_daemon(smtp_section(port, extra='max_message_size = "10KiB"\n'))
    head = b"From: ann@example.org\r\nSubject: big\r\n\r\n"
    at_limit = head + body(10 * 1024 - len(head))
    over = head + body(10 * 1024 + 1 - len(head))
    assert len(at_limit) == 10240 and len(over) == 10241
    commands = [
        b"EHLO c.example\r\n",
        *_mail_commands([over[:5000], over[5000:], b".\r\n"]),
        *_mail_commands([at_limit, b".\r\n"]),
        b"QUIT\r\n",
    ]
    got = await talk(port, commands)
    assert got[5].startswith("552 ") and got[9] == replies.ACCEPTED
    assert [raw for _, _, raw in _raw_mails(live)] == [at_limit]


async def test_an_overlong_line_is_refused_and_the_session_goes_on(
    smtp: tuple[LiveDaemon, int],
) -> None:
    from tests.integration.test_smtp_protocol import talk

    live, port = smtp
    long_line = b"Subject: long\r\n\r\n" + b"x" * 1000 + b"\r\n.\r\n"  # 1002 with the CRLF
    ok_line = b"From: ann@example.org\r\n\r\n" + b"y" * 998 + b"\r\n.\r\n"  # 1000: fine
    commands = [
        b"EHLO c.example\r\n",
        *_mail_commands([long_line[:700], long_line[700:]]),
        *_mail_commands(ok_line),
        b"QUIT\r\n",
    ]
    got = await talk(port, commands)
    assert got[5].startswith("500 Line too long") and got[9] == replies.ACCEPTED
    assert [raw for _, _, raw in _raw_mails(live)] == [ok_line[:-3]]


async def test_odd_but_valid_addresses(smtp: tuple[LiveDaemon, int]) -> None:
    """Forms the plain `<local@domain>` fast path leaves to aiosmtpd's own parser."""
    from tests.integration.test_smtp_protocol import talk

    live, port = smtp
    data = b"From: ann@example.org\r\nSubject: odd\r\n\r\nhello\r\n.\r\n"
    commands = [
        b"EHLO c.example\r\n",
        b'MAIL FROM:<"ann lee"@example.org> (a comment) BODY=8BITMIME\r\n',
        b'RCPT TO:<"support"@example.com>\r\n',  # quoted, the same address
        b"RCPT TO:<@relay.example:billing@help.example.com>\r\n",  # a source route
        b"RCPT TO:sales@help.example.com\r\n",  # no angle brackets
        b"RCPT TO:<nobody@elsewhere.example> SIZE=5\r\n",
        b"DATA\r\n",
        data,
        b"MAIL FROM:<>\r\n",  # the null sender of a bounce
        b"RCPT TO:<support@example.com>   \r\n",
        b"RCPT TO:<support@example.com>(comment)\r\n",
        b"QUIT\r\n",
    ]
    got = await talk(port, commands)
    assert got[3] == got[4] == got[5] == replies.RECIPIENT_OK
    assert got[6].startswith("55")  # not ours (550) or a parameter refused (555)
    assert got[8] == replies.ACCEPTED
    assert got[9].startswith("250") and got[10] == got[11] == replies.RECIPIENT_OK
    ((mail_from, recipients, _),) = _raw_mails(live)
    assert mail_from == '"ann lee"@example.org'
    assert "support@example.com" in recipients and "billing@help.example.com" in recipients
    (event,) = await inbound(live, 1)
    assert event["data"]["recipients"] == [
        "support@example.com",
        "billing@help.example.com",
        "sales@help.example.com",
    ]


async def test_lmtp_answers_per_recipient_after_chunked_data(
    make_daemon: Callable[..., Any],
) -> None:
    from tests.integration.test_smtp_protocol import talk

    port = free_port()
    live = await make_daemon(smtp_section(port, kind="lmtp"))
    data = b"From: ann@example.org\r\nSubject: three\r\n\r\n..dot\r\n"
    commands = [
        b"LHLO mta.example\r\n",
        b"MAIL FROM:<ann@example.org>\r\n",
        b"RCPT TO:<support@example.com>\r\n",
        b"RCPT TO:<nobody@elsewhere.example>\r\n",
        b'RCPT TO:<"sales"@help.example.com>\r\n',
        b"DATA\r\n",
        [data[:20], data[20:] + b".", b"\r\n"],
        b"QUIT\r\n",
    ]
    got = await talk(port, commands, replies_per_command=[1, 1, 1, 1, 1, 1, 2, 1])
    assert got[4].startswith("550")
    assert got[7:9] == [
        replies.lmtp_accepted("support@example.com"),
        replies.lmtp_accepted("sales@help.example.com"),
    ]
    (event,) = await inbound(live, 1)
    assert event["data"]["recipients"] == ["support@example.com", "sales@help.example.com"]
    assert event["data"]["text"].strip() == ".dot"


# -- the bounded backlog of accepted mail --------------------------------------------------


async def _counters(live: LiveDaemon) -> dict[str, int]:
    _, body, _ = await live.get("/readyz", token=None)
    return body["components"]["connectors.mail"]["counters"]  # type: ignore[no-any-return]


def _stall(live: LiveDaemon, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Hold every normalized mail's store write until the event is set."""
    go = asyncio.Event()
    ingestor = live.daemon.ingestor
    real = ingestor.ingest

    async def held(item: Any) -> Any:
        await go.wait()
        return await real(item)

    monkeypatch.setattr(ingestor, "ingest", held)
    return go


def _numbered(n: int) -> EmailMessage:
    return mail(f"c{n}@example.org", "support@example.com", f"Number {n}", f"mail number {n}")


async def test_past_the_backlog_bound_data_is_451_and_nothing_is_committed(
    make_daemon: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    live = await make_daemon(smtp_section(port, extra="max_backlog = 3\n"))
    go = _stall(live, monkeypatch)
    for n in range(3):
        assert await asyncio.to_thread(send, port, _numbered(n), ["support@example.com"]) == {}
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asyncio.to_thread(send, port, _numbered(3), ["support@example.com"])
    assert info.value.smtp_code == 451  # never a 5xx: the sender's MTA keeps it and retries
    assert info.value.smtp_error.decode() == replies.BACKLOG_FULL.split(" ", 1)[1]
    assert len(_raw_mails(live)) == 3  # the refused mail was not committed
    counters = await _counters(live)
    assert counters["backlog"] == 3 and counters["backlog_refused"] == 1
    assert counters["accepted"] == 3 and counters["normalized"] == 0
    go.set()  # the store takes writes again: the backlog drains, in order
    events = await inbound(live, 3)
    assert [e["data"]["subject"] for e in events] == [f"Number {n}" for n in range(3)]
    assert (await _counters(live))["backlog"] == 0
    assert await asyncio.to_thread(send, port, _numbered(3), ["support@example.com"]) == {}
    events = await inbound(live, 4)
    assert [e["data"]["subject"] for e in events][-1] == "Number 3"
    assert (await _counters(live))["normalized"] == 4


async def test_the_backlog_is_bounded_in_bytes_too(
    make_daemon: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    live = await make_daemon(smtp_section(port, extra='max_backlog_bytes = "4KiB"\n'))
    go = _stall(live, monkeypatch)
    big = mail("ann@example.org", "support@example.com", "big", "x" * 6000)
    # Alone in the backlog a mail is taken whatever its size (up to max_message_size) ...
    assert await asyncio.to_thread(send, port, big, ["support@example.com"]) == {}
    # ... but nothing more while it waits there.
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asyncio.to_thread(send, port, _numbered(1), ["support@example.com"])
    assert info.value.smtp_code == 451
    go.set()
    await inbound(live, 1)
    assert await asyncio.to_thread(send, port, _numbered(1), ["support@example.com"]) == {}
    assert len(await inbound(live, 2)) == 2


async def test_lmtp_answers_451_per_recipient_when_the_backlog_is_full(
    make_daemon: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_smtp_protocol import talk

    port = free_port()
    live = await make_daemon(smtp_section(port, kind="lmtp", extra="max_backlog = 1\n"))
    _stall(live, monkeypatch)

    def commands(n: int) -> list[Any]:
        return [
            b"MAIL FROM:<ann@example.org>\r\n",
            b"RCPT TO:<support@example.com>\r\n",
            b"RCPT TO:<sales@help.example.com>\r\n",
            b"DATA\r\n",
            _numbered(n).as_bytes().replace(b"\n", b"\r\n") + b".\r\n",
        ]

    got = await talk(
        port,
        [b"LHLO mta.example\r\n", *commands(0), *commands(1)],
        replies_per_command=[1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 2],
    )
    assert got[6:8] == [
        replies.lmtp_accepted(a) for a in ("support@example.com", "sales@help.example.com")
    ]
    assert got[12:14] == [
        replies.lmtp_backlog_full(a) for a in ("support@example.com", "sales@help.example.com")
    ]
    assert len(_raw_mails(live)) == 1


async def test_the_backlog_left_at_stop_is_normalized_at_the_next_start(
    make_daemon: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop does not wait for the backlog (it is bounded); every mail answered 250 becomes
    exactly one event at the next start, in the order it was accepted."""
    port = free_port()
    live = await make_daemon(smtp_section(port))
    _stall(live, monkeypatch)
    for n in range(6):
        assert await asyncio.to_thread(send, port, _numbered(n), ["support@example.com"]) == {}
    assert (await _counters(live))["backlog"] == 6
    supervisor = live.daemon._supervisors["connectors.mail"]
    started = time.monotonic()
    await supervisor.stop()
    assert time.monotonic() - started < 5  # bounded, though six writes were held
    assert await inbound(live, 1, timeout=0.2) == []
    monkeypatch.undo()  # the store takes writes again
    await live.daemon._start_component(supervisor.spec)
    events = await inbound(live, 6)
    await asyncio.sleep(0.2)
    events = await inbound(live, 6)
    assert [e["data"]["subject"] for e in events] == [f"Number {n}" for n in range(6)]
    assert len(_raw_mails(live)) == 6
    with sqlite3.connect(live.daemon.store.path) as db:
        states = db.execute("SELECT state FROM raw_mail ORDER BY id").fetchall()
    assert states == [("done",)] * 6
    counters = await _counters(live)
    assert counters["backlog"] == 0 and counters["normalized"] == 6


async def test_mail_is_normalized_in_the_order_it_was_accepted(
    smtp: tuple[LiveDaemon, int],
) -> None:
    live, port = smtp

    def send_all() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example.org")
            for n in range(20):
                raw = _numbered(n).as_bytes(policy=SMTP_POLICY)
                client.sendmail(f"c{n}@example.org", ["support@example.com"], raw)

    await asyncio.to_thread(send_all)
    events = await inbound(live, 20)
    assert [e["data"]["subject"] for e in events] == [f"Number {n}" for n in range(20)]


async def test_8bit_bytes_in_mime_fields_still_make_an_event(smtp: tuple[LiveDaemon, int]) -> None:
    live, port = smtp
    raw = (
        b"From: ann@example.org\r\nSubject: 8-bit\r\nMessage-ID: <8bit@example.org>\r\n"
        b"Content-Type: text/plain; charset=\xe4\r\nX-Mailer: caf\xe9\r\n\r\nHello\r\n"
    )
    assert await asyncio.to_thread(send, port, raw, ["support@example.com"]) == {}
    (event,) = await inbound(live, 1)
    assert event["data"]["text"].strip() == "Hello"


async def test_a_mail_normalizing_cannot_handle_is_parked_and_the_rest_goes_on(
    smtp: tuple[LiveDaemon, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug met while normalizing one mail parks that mail as failed for an operator (it
    would fail again at every start); the connector and the mail after it carry on."""
    import connectors.mail.normalize

    live, port = smtp
    real = connectors.mail.normalize.parse_with_headers

    def buggy(raw: bytes) -> Any:
        if b"Subject: boom" in raw:
            raise RuntimeError("a bug met on this mail")
        return real(raw)

    monkeypatch.setattr(connectors.mail.normalize, "parse_with_headers", buggy)
    for subject in ("boom", "fine"):
        msg = mail("ann@example.org", "support@example.com", subject, "text of it")
        assert await asyncio.to_thread(send, port, msg, ["support@example.com"]) == {}
    (event,) = await inbound(live, 1)
    assert event["data"]["subject"] == "fine"
    with sqlite3.connect(live.daemon.store.path) as db:
        rows = db.execute("SELECT state, error FROM raw_mail ORDER BY id").fetchall()
    assert rows[0][0] == "failed" and "RuntimeError: a bug met on this mail" in rows[0][1]
    assert rows[1] == ("done", None)
    assert (await _counters(live))["backlog"] == 0
