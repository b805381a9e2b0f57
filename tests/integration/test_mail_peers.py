"""Mail from real peers: swaks over SMTP and LMTP, and Postfix relaying into the lmtp connector."""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from tests.conftest import free_port
from tests.integration.test_smtp import inbound, smtp_section
from tests.peers import PrivatePostfix, need


async def swaks(port: int, *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(port),
        "--from",
        "cust@example.org",
        "--helo",
        "client.example.org",
        "--timeout",
        "15",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace"), time.monotonic() - started


async def test_swaks_over_smtp(make_daemon: Callable[..., Any]) -> None:
    need("swaks")
    port = free_port()
    live = await make_daemon(smtp_section(port))
    code, out, _ = await swaks(
        port,
        "--to",
        "support@example.com",
        "--header",
        "Subject: swaks test",
        "--body",
        "Hello from swaks",
    )
    assert code == 0, out
    (event,) = await inbound(live, 1)
    assert event["data"]["subject"] == "swaks test"
    assert event["data"]["from"]["email"] == "cust@example.org"


async def test_swaks_over_lmtp_gets_one_reply_per_recipient(
    make_daemon: Callable[..., Any],
) -> None:
    """swaks waits for one reply per recipient after DATA; a missing one would stall it."""
    need("swaks")
    port = free_port()
    live = await make_daemon(smtp_section(port, kind="lmtp"))
    code, out, seconds = await swaks(
        port,
        "--protocol",
        "LMTP",
        "--to",
        "support@example.com,sales@help.example.com",
        "--header",
        "Subject: two desks",
        "--body",
        "for both of you",
    )
    assert code == 0, out
    assert seconds < 10
    for rcpt in ("support@example.com", "sales@help.example.com"):  # one DATA answer each
        assert f"<-  250 2.1.5 <{rcpt}> accepted" in out, out
    (event,) = await inbound(live, 1)
    assert event["data"]["recipients"] == ["support@example.com", "sales@help.example.com"]


async def test_postfix_relays_into_the_lmtp_connector(make_daemon: Callable[..., Any]) -> None:
    need("postfix", "postconf")
    lmtp_port, postfix_port = free_port(), free_port()
    live = await make_daemon(smtp_section(lmtp_port, kind="lmtp"))
    postfix = PrivatePostfix(
        postfix_port, ["example.com", "help.example.com"], f"lmtp:inet:127.0.0.1:{lmtp_port}"
    )
    try:
        await asyncio.to_thread(postfix.start)
        msg = EmailMessage()
        msg["From"], msg["To"] = "Ann <ann@example.org>", "support@example.com"
        msg["Subject"], msg["Message-ID"] = "Through Postfix", "<pf1@customer.example>"
        msg.set_content("Relayed by a real MTA")

        def send() -> Any:
            with smtplib.SMTP("127.0.0.1", postfix_port, timeout=10) as client:
                return client.sendmail(
                    "ann@example.org",
                    ["support@example.com", "sales@help.example.com"],
                    msg.as_bytes(),
                )

        assert await asyncio.to_thread(send) == {}
        (event,) = await inbound(live, 1, timeout=20)
        assert event["data"]["message_id"] == "pf1@customer.example"
        assert sorted(event["data"]["recipients"]) == [
            "sales@help.example.com",
            "support@example.com",
        ]
        deadline = time.monotonic() + 10
        while postfix.log().count("status=sent") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert postfix.log().count("status=sent") == 2, postfix.log()
    finally:
        await asyncio.to_thread(postfix.stop)
