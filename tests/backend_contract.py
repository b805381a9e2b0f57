"""The behaviour every helpdesk backend must show, run against each one's server.

A vendor's test module subclasses `BackendContract` and provides a `driver`
fixture (a `Driver`): how to configure the backend against its fake (or real)
server, and how to read that server's state. It also imports the `relay`
fixture (`from tests.integration.test_outbound import relay`, noqa F401).
Everything is checked at the receiving server, never at the sender: one
ticket per conversation, messages in order, and an agent's answer reaching the
customer's mailbox.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pytest

from tests.conftest import LiveDaemon, until
from tests.fakes.harness import CommitThenReset, DelayThenCommit, Fault, Status
from tests.integration.test_outbound import Relay, customer_writes, daemon_with_mail
from tests.integration.test_smtp import mail, send

Kind = Literal["customer", "agent", "note"]
NAME = "desk"  # the [backends.NAME] every contract test configures


@dataclass(frozen=True)
class Seen:
    """One message of a ticket as the helpdesk holds it."""

    text: str
    kind: Kind


class Driver(Protocol):
    """What a vendor module gives the contract: its server and how to read it."""

    type: str

    def section(self) -> str:
        """The keys of `[backends.desk]` (after the header) pointing at the server; fast
        retries (retry_base = "50ms", retry_cap = "1s") keep the suite quick, and
        timeout = "5s" outlasts the 3 s held answer of the SIGKILL test."""
        ...

    def arm(self, fault: Fault, on: Literal["create", "add"], times: int = 1) -> None:
        """Make the next `times` ticket creates (or follow-up adds) meet `fault`."""
        ...

    def refusal(self) -> Status:
        """The vendor's own answer refusing a request as invalid (a 4xx it documents)."""
        ...

    def tickets(self, conversation_id: str) -> list[str]:
        """The server's tickets for this conversation (by helpline's marker)."""
        ...

    def messages(self, ticket_id: str) -> list[Seen]:
        """The ticket's messages in the server's order."""
        ...

    def resolved(self, ticket_id: str) -> bool:
        """Whether the ticket is in the state helpline maps a resolved conversation to."""
        ...

    async def agent_reply(self, ticket_id: str, text: str, *, public: bool = True) -> None:
        """An agent answers in the helpdesk (its webhook fires, or the poller will see it)."""
        ...


def texts(seen: list[Seen], kind: Kind) -> list[str]:
    return [s.text.strip() for s in seen if s.kind == kind]


async def _conversation(live: LiveDaemon, n: int, text: str | None = None) -> dict[str, Any]:
    body = {
        "from": {"email": f"cust{n}@example.org", "name": f"Customer {n}"},
        "subject": f"Case {n}",
        "text": text or f"Case {n}: first message.",
    }
    status, ack, _ = await live.post("/v1/messages", body)
    assert status == 201, ack
    return dict(ack)


async def _wait(check: Callable[[], bool], timeout: float = 15.0) -> None:
    await until(check, timeout)


class BackendContract:
    """Subclass in tests/integration/test_backend_<vendor>.py with a `driver` fixture."""

    async def _daemon(self, make_daemon: Any, driver: Driver, relay: tuple[Relay, int]) -> Any:
        live, port = await daemon_with_mail(
            make_daemon, relay[1], core=f"[backends.{NAME}]\n{driver.section()}\n"
        )
        return live, port

    async def test_two_channels_make_one_ticket_with_both_messages(
        self, make_daemon: Any, driver: Driver, relay: tuple[Relay, int]
    ) -> None:
        live, port = await self._daemon(make_daemon, driver, relay)
        first = await customer_writes(live, port)  # email, from ann@example.org
        body = {"from": {"email": "ann@example.org"}, "text": "Also: the fax is beeping."}
        status, second, _ = await live.post("/v1/messages", body)  # the API channel
        assert status == 201 and second["conversation_id"] == first["data"]["conversation_id"]
        conversation = second["conversation_id"]
        await _wait(lambda: len(texts(_messages(driver, conversation), "customer")) == 2)
        assert len(driver.tickets(conversation)) == 1
        assert texts(_messages(driver, conversation), "customer") == [
            "It smokes",
            "Also: the fax is beeping.",
        ]

    async def test_a_lost_create_answer_makes_no_second_ticket(
        self, make_daemon: Any, driver: Driver, relay: tuple[Relay, int]
    ) -> None:
        driver.arm(CommitThenReset(), on="create")
        live, _ = await self._daemon(make_daemon, driver, relay)
        ack = await _conversation(live, 1)
        await _conversation(live, 1, "Case 1: second message.")
        conversation = ack["conversation_id"]
        await _wait(lambda: len(texts(_messages(driver, conversation), "customer")) == 2)
        await asyncio.sleep(0.5)  # room for a wrong second create to land
        assert len(driver.tickets(conversation)) == 1
        assert texts(_messages(driver, conversation), "customer") == [
            "Case 1: first message.",
            "Case 1: second message.",
        ]

    async def test_throttling_and_outages_are_waited_out(
        self, make_daemon: Any, driver: Driver, relay: tuple[Relay, int]
    ) -> None:
        driver.arm(Status(429, {"error": "slow down"}, {"Retry-After": "1"}), on="create")
        driver.arm(Status(503, {"error": "maintenance"}), on="create", times=2)
        live, _ = await self._daemon(make_daemon, driver, relay)
        ack = await _conversation(live, 2)
        conversation = ack["conversation_id"]
        await _wait(lambda: len(driver.tickets(conversation)) == 1)
        _, view, _ = await live.get(f"/v1/backends/{NAME}")
        assert view["retries"] >= 3
        await asyncio.sleep(0.3)
        assert len(driver.tickets(conversation)) == 1
        assert texts(_messages(driver, conversation), "customer") == ["Case 2: first message."]

    async def test_order_is_kept_per_conversation_across_many(
        self, make_daemon: Any, driver: Driver, relay: tuple[Relay, int]
    ) -> None:
        live, _ = await self._daemon(make_daemon, driver, relay)
        conversations = {}
        for step in range(3):
            for n in range(10, 16):
                ack = await _conversation(live, n, f"Case {n}: message {step}.")
                conversations[n] = ack["conversation_id"]
        for n, conversation in conversations.items():
            await _wait(lambda c=conversation: len(texts(_messages(driver, c), "customer")) == 3)
            assert texts(_messages(driver, conversation), "customer") == [
                f"Case {n}: message {step}." for step in range(3)
            ]
            assert len(driver.tickets(conversation)) == 1

    async def test_a_refused_message_is_parked_and_the_conversation_goes_on(
        self, make_daemon: Any, driver: Driver, relay: tuple[Relay, int]
    ) -> None:
        live, _ = await self._daemon(make_daemon, driver, relay)
        ack = await _conversation(live, 3)
        conversation = ack["conversation_id"]
        await _wait(lambda: len(driver.tickets(conversation)) == 1)
        driver.arm(driver.refusal(), on="add")
        _, refused, _ = await live.post(
            "/v1/messages", {"from": {"email": "cust3@example.org"}, "text": "Refused one."}
        )
        await _conversation(live, 3, "Case 3: after the refusal.")
        await _wait(lambda: "Case 3: after the refusal." in _customer_texts(driver, conversation))
        assert "Refused one." not in _customer_texts(driver, conversation)
        _, listed, _ = await live.get(
            f"/v1/backends/{NAME}/dead-letters?conversation_id={conversation}"
        )
        [letter] = listed["dead_letters"]
        assert letter["event_id"] == refused["event_id"]
        assert 400 <= letter["status"] < 500
        await live.post(f"/v1/backends/{NAME}/dead-letters/{letter['offset']}/replay", {})
        await _wait(lambda: "Refused one." in _customer_texts(driver, conversation))
        assert len(driver.tickets(conversation)) == 1

    async def test_an_agent_reply_reaches_the_customer_by_mail_and_notes_do_not(
        self, make_daemon: Any, driver: Driver, relay: tuple[Relay, int]
    ) -> None:
        live, port = await self._daemon(make_daemon, driver, relay)
        first = await customer_writes(live, port)
        conversation = first["data"]["conversation_id"]
        await _wait(lambda: len(driver.tickets(conversation)) == 1)
        [ticket] = driver.tickets(conversation)
        await driver.agent_reply(ticket, "Only for colleagues.", public=False)
        await driver.agent_reply(ticket, "Unplug it and wait ten minutes.")
        sink = relay[0]
        await _wait(lambda: len(sink.received) >= 1)
        await asyncio.sleep(0.5)  # a note would be sent by now too
        [mailed] = sink.received
        assert mailed["To"] == "ann@example.org"
        assert mailed["In-Reply-To"] == "<c1@customer.example>"
        assert "Unplug it and wait ten minutes." in mailed.get_body(("plain",)).get_content()
        outbound = [
            e
            for e in await live.stream()
            if e["type"] == "helpline.message.outbound.v1" and not e["data"]["internal"]
        ]
        assert [e["source"] for e in outbound] == [f"/backends/{NAME}"]
        await asyncio.sleep(0.3)
        # the reply helpline recorded is not posted back into the ticket it came from
        assert (
            texts(_messages(driver, conversation), "agent").count("Unplug it and wait ten minutes.")
            == 1
        )
        # and the customer's answer to it lands on the same ticket
        answer = mail(
            "Ann <ann@example.org>",
            "support@example.com",
            mailed["Subject"],
            "It worked, thanks",
            message_id="<c2@customer.example>",
            in_reply_to=mailed["Message-ID"],
        )
        await asyncio.to_thread(send, port, answer, ["support@example.com"])
        await _wait(lambda: "It worked, thanks" in _customer_texts(driver, conversation))
        assert driver.tickets(conversation) == [ticket]

    async def test_resolving_the_conversation_resolves_the_ticket(
        self, make_daemon: Any, driver: Driver, relay: tuple[Relay, int]
    ) -> None:
        live, _ = await self._daemon(make_daemon, driver, relay)
        ack = await _conversation(live, 4)
        conversation = ack["conversation_id"]
        await _wait(lambda: len(driver.tickets(conversation)) == 1)
        status, _, _ = await live.post(f"/v1/conversations/{conversation}/resolve", {})
        assert status == 200
        [ticket] = driver.tickets(conversation)
        await _wait(lambda: driver.resolved(ticket))

    @pytest.mark.e2e
    def test_sigkill_between_create_and_map_store_makes_no_second_ticket(
        self, daemon_process: Any, driver: Driver
    ) -> None:
        driver.arm(DelayThenCommit(3.0), on="create")
        proc = daemon_process(f"[backends.{NAME}]\n{driver.section()}\n")
        proc.start()
        import urllib.request

        from tests.conftest import TOKENS

        request = urllib.request.Request(
            proc.url + "/v1/messages",
            data=b'{"from": {"email": "kill@example.org"}, "text": "Before the crash."}',
            headers={
                "Authorization": f"Bearer {TOKENS['main']}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            conversation = json.loads(answer.read())["conversation_id"]
        deadline = time.monotonic() + 10
        while not driver.tickets(conversation):  # the helpdesk has it; helpline waits
            assert time.monotonic() < deadline, "the create never reached the server"
            time.sleep(0.05)
        proc.signal(signal.SIGKILL)
        proc.wait(10)
        with sqlite3.connect(proc.state_dir / "helpline.db") as db:
            states = db.execute("SELECT state FROM backend_refs WHERE kind = 'ticket'").fetchall()
        assert states == [("pending",)], "the map was stored before the answer came"
        proc.start()
        deadline = time.monotonic() + 15
        while True:
            with sqlite3.connect(proc.state_dir / "helpline.db") as db:
                row = db.execute(
                    "SELECT state, remote_id FROM backend_refs WHERE kind = 'ticket'"
                ).fetchone()
            if row[0] == "created":
                break
            assert time.monotonic() < deadline, "the pending create was never resolved"
            time.sleep(0.1)
        assert driver.tickets(conversation) == [row[1]]
        assert texts(driver.messages(row[1]), "customer") == ["Before the crash."]


def _messages(driver: Driver, conversation: str) -> list[Seen]:
    found = driver.tickets(conversation)
    return driver.messages(found[0]) if found else []


def _customer_texts(driver: Driver, conversation: str) -> list[str]:
    return texts(_messages(driver, conversation), "customer")
