"""Agent replies reach the customer by mail through a real SMTP relay, threaded both ways."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from tests.conftest import LiveDaemon, free_port, until
from tests.integration.test_smtp import inbound, mail, send, smtp_section


class Relay:
    """An SMTP sink standing in for the team's relay; it can refuse on request."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.answers: list[str] = []  # answers to DATA before accepting, e.g. ["451 busy"]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.answers:
            return self.answers.pop(0)
        self.received.append(message_from_bytes(envelope.original_content, policy=default))
        return "250 OK"


@pytest.fixture
async def relay() -> AsyncIterator[tuple[Relay, int]]:
    sink, port = Relay(), free_port()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, hostname="relay.test"), "127.0.0.1", port)
    yield sink, port
    server.close()
    await server.wait_closed()


async def daemon_with_mail(
    make_daemon: Callable[..., Any],
    relay_port: int,
    out: str = "",
    smtp: str = "",
    core: str = "",
    **options: Any,
) -> tuple[LiveDaemon, int]:
    """A daemon taking mail by SMTP and sending by the relay; `out` and `smtp` add keys to
    their connectors, `core` whole core sections, `options` go to make_daemon (a clock,
    a stopped one's state)."""
    port = free_port()
    live = await make_daemon(
        core
        + smtp_section(port, extra=smtp)
        + f'[connectors.out]\ntype = "smtp_out"\nrelay = "127.0.0.1:{relay_port}"\n'
        'security = "none"\nmessage_id_domain = "helpline.test"\n' + out,
        **options,
    )
    return live, port


async def customer_writes(live: LiveDaemon, port: int) -> dict[str, Any]:
    first = mail(
        "Ann <ann@example.org>",
        "support@example.com",
        "Printer on fire",
        "It smokes",
        message_id="<c1@customer.example>",
    )
    await asyncio.to_thread(send, port, first, ["support@example.com"])
    (event,) = await inbound(live, 1)
    return event


async def test_a_reply_reaches_the_customer_and_the_answer_threads_back(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    live, port = await daemon_with_mail(make_daemon, relay_port)
    first = await customer_writes(live, port)
    conv = first["subject"]
    number = first["data"]["conversation_number"]
    await live.post(
        f"/v1/conversations/{conv}/replies", {"text": "internal: VIP", "internal": True}
    )
    _, reply, _ = await live.post(
        f"/v1/conversations/{conv}/replies",
        {
            "text": "We sent a technician.",
            "html": "<p>We sent a <b>technician</b>.</p>",
            "author": {"kind": "human", "name": "Sam"},
        },
    )
    await until(lambda: len(sink.received) == 1)
    sent = sink.received[0]
    assert sent["From"] == "support@example.com" and sent["To"] == "ann@example.org"
    assert sent["Subject"] == f"Re: Printer on fire [#HL-{number}]"
    assert sent["In-Reply-To"] == "<c1@customer.example>"
    assert sent["References"] == "<c1@customer.example>"
    assert sent["Message-ID"] == f"<{reply['event_id']}@helpline.test>"
    body = sent.get_body(("plain",))
    html = sent.get_body(("html",))
    assert body is not None and body.get_content().strip() == "We sent a technician."
    assert html is not None and "<b>technician</b>" in html.get_content()

    answer = mail(
        "ann@example.org",
        "support@example.com",
        sent["Subject"],
        "Thanks, it works",
        in_reply_to=sent["Message-ID"],
        references=sent["Message-ID"],
    )
    await asyncio.to_thread(send, port, answer, ["support@example.com"])
    events = await inbound(live, 2)
    assert events[1]["subject"] == conv  # the customer's answer joins the same conversation
    await asyncio.sleep(0.3)
    assert len(sink.received) == 1  # the internal note never left


async def test_a_permanent_refusal_is_recorded_on_the_conversation(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    sink.answers = ["550 5.1.1 mailbox unavailable"]
    live, port = await daemon_with_mail(make_daemon, relay_port)
    first = await customer_writes(live, port)
    _, reply, _ = await live.post(
        f"/v1/conversations/{first['subject']}/replies", {"text": "Hello Ann"}
    )

    async def failure() -> dict[str, Any] | None:
        return next(
            (e for e in await live.stream() if e["type"] == "helpline.message.delivery_failed.v1"),
            None,
        )

    deadline = time.monotonic() + 8
    while (found := await failure()) is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert found["data"]["reply_event_id"] == reply["event_id"]
    assert found["data"]["recipient"] == "ann@example.org"
    assert found["data"]["reason"].startswith("550")
    assert sink.received == []
    # Refused at DATA (the content, say), not at RCPT: the address is not marked failing.
    _, contact, _ = await live.get(f"/v1/contacts/{first['data']['contact_id']}")
    assert [h["failing"] for h in contact["handles"] if h["kind"] == "email"] == [None]


async def test_temporary_failures_are_retried_and_nothing_is_sent_twice(
    make_daemon: Callable[..., Any], relay: tuple[Relay, int]
) -> None:
    sink, relay_port = relay
    sink.answers = ["451 4.3.0 try later"]
    live, port = await daemon_with_mail(make_daemon, relay_port)
    first = await customer_writes(live, port)
    await live.post(f"/v1/conversations/{first['subject']}/replies", {"text": "Hello Ann"})
    await until(
        lambda: live.daemon.readiness()[1]["components"]["connectors.out"]["state"] == "degraded"
    )
    await until(lambda: len(sink.received) == 1)
    health = live.daemon.readiness()[1]["components"]["connectors.out"]
    assert health["state"] == "running" and health["counters"]["sent"] == 1
    # A restart of the component resumes from its durable cursor: no second copy.
    supervisor = live.daemon._supervisors["connectors.out"]
    await supervisor.stop()
    await live.daemon._start_component(supervisor.spec)
    await asyncio.sleep(0.5)
    assert len(sink.received) == 1
