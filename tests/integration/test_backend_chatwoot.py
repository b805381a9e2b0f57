"""The chatwoot backend against the Chatwoot fake: the shared contract, then what is
Chatwoot's own (signed webhooks, the echo of helpline's writes, message source_id markers,
contact adoption, attachments both ways, the start-up check, refused credentials)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from gateway.backends.chatwoot import ChatwootConfig
from gateway.backends.chatwoot_hook import AgentMessage, Refused, agent_message, verify
from tests.backend_contract import NAME, BackendContract, Seen, texts
from tests.conftest import LiveDaemon, until
from tests.fakes.chatwoot import FakeChatwoot
from tests.fakes.harness import CommitThenReset, DelayThenCommit, Fault, Status
from tests.integration import test_outbound
from tests.integration.test_outbound import Relay, customer_writes, daemon_with_mail
from tests.integration.test_smtp import inbound, mail, send

relay = test_outbound.relay  # the SMTP relay fixture the contract asks for

TOKEN = "cw-user-token"
PDF = b"%PDF-1.4\n% helpline test\n" + bytes(range(256)) * 4


class ChatwootDriver:
    type = "chatwoot"

    def __init__(self, fake: FakeChatwoot, extra: str = "") -> None:
        self.fake = fake
        self.extra = extra
        self.secret = fake.inboxes[fake.api_inbox_id].secret or ""

    def section(self) -> str:
        return (
            f'type = "chatwoot"\nurl = "{self.fake.url}"\naccount_id = {self.fake.account_id}\n'
            f'inbox_id = {self.fake.api_inbox_id}\ntoken = "{TOKEN}"\n'
            f'webhook_secret = "{self.secret}"\n'
            'retry_base = "50ms"\nretry_cap = "1s"\ntimeout = "5s"\n' + self.extra
        )

    def arm(self, fault: Fault, on: Literal["create", "add"], times: int = 1) -> None:
        path = r"/conversations$" if on == "create" else r"/conversations/\d+/messages$"
        self.fake.arm(fault, method="POST", path=path, times=times)

    def refusal(self) -> Status:
        return Status(
            422,
            {"message": "Content is too long (maximum is 150000 characters)", "attributes": []},
        )

    def tickets(self, conversation_id: str) -> list[str]:
        found = self.fake.tickets_by_attribute("helpline_cid", conversation_id)
        return [str(t["id"]) for t in sorted(found, key=lambda t: int(t["id"]))]

    def messages(self, ticket_id: str) -> list[Seen]:
        seen = []
        for m in self.fake.messages(int(ticket_id)):
            if m["message_type"] == "incoming":
                seen.append(Seen(m["content"] or "", "customer"))
            elif m["message_type"] == "outgoing":
                seen.append(Seen(m["content"] or "", "note" if m["private"] else "agent"))
        return seen

    def resolved(self, ticket_id: str) -> bool:
        return any(
            t["status"] == "resolved" for t in self.fake.tickets() if str(t["id"]) == ticket_id
        )

    async def agent_reply(self, ticket_id: str, text: str, *, public: bool = True) -> None:
        self.fake.agent_reply(int(ticket_id), text, public=public)


@pytest.fixture
def fake() -> Iterator[FakeChatwoot]:
    with FakeChatwoot() as server:
        yield server


@pytest.fixture
def driver(fake: FakeChatwoot) -> ChatwootDriver:
    return ChatwootDriver(fake)


@pytest.fixture
async def make_daemon(
    make_daemon: Callable[..., Any], fake: FakeChatwoot
) -> AsyncIterator[Callable[..., Any]]:
    """The conftest fixture, then the API inbox's webhook_url pointed at the new daemon
    (its port is only known once it runs)."""

    async def start(*args: Any, **kwargs: Any) -> LiveDaemon:
        live: LiveDaemon = await make_daemon(*args, **kwargs)
        fake.set_webhook(f"{live.url}/hooks/{NAME}")
        return live

    yield start


class TestChatwoot(BackendContract):
    pass


# -- helpers -----------------------------------------------------------------
async def _started(
    make_daemon: Any, driver: ChatwootDriver, relay: tuple[Relay, int]
) -> tuple[LiveDaemon, int, str, str]:
    """A daemon, Ann's first mail, and the ticket it made: (live, smtp port, conv, ticket)."""
    live, port = await daemon_with_mail(
        make_daemon, relay[1], core=f"[backends.{NAME}]\n{driver.section()}\n"
    )
    first = await customer_writes(live, port)
    conversation = first["data"]["conversation_id"]
    await until(
        lambda: len(driver.tickets(conversation)) == 1 and _has_messages(driver, conv=conversation)
    )
    return live, port, conversation, driver.tickets(conversation)[0]


def _has_messages(driver: ChatwootDriver, *, conv: str) -> bool:
    found = driver.tickets(conv)
    return bool(found and driver.messages(found[0]))


async def _outbound_from_backend(live: LiveDaemon) -> list[dict[str, Any]]:
    return [
        e
        for e in await live.stream()
        if e["type"] == "helpline.message.outbound.v1" and e["source"] == f"/backends/{NAME}"
    ]


async def _health(live: LiveDaemon) -> dict[str, Any]:
    _, ready, _ = await live.get("/readyz", token=None)
    return dict(ready["components"][f"backends.{NAME}"])


# -- webhooks: signatures, replays ---------------------------------------------
async def test_forged_and_stale_webhooks_are_refused(
    make_daemon: Any, driver: ChatwootDriver, fake: FakeChatwoot, relay: tuple[Relay, int]
) -> None:
    live, _, _, ticket = await _started(make_daemon, driver, relay)
    fake.agent_reply(int(ticket), "Signed and fine.")
    await until(lambda: len(relay[0].received) == 1)
    delivery = next(d for d in fake.deliveries("message_created") if "Signed" in str(d.payload))
    forged = await fake.send_tampered(delivery.delivery_id, bad_signature=True)
    stale = await fake.send_tampered(delivery.delivery_id, age=3600)
    assert (forged.status, stale.status) == (401, 401)
    assert (await _health(live))["counters"]["replies_refused"] == 2


async def test_a_webhook_signed_with_another_secret_records_nothing(
    make_daemon: Any, fake: FakeChatwoot, relay: tuple[Relay, int]
) -> None:
    driver = ChatwootDriver(fake)
    driver.secret = "not-the-inbox-secret"
    live, _, _, ticket = await _started(make_daemon, driver, relay)
    message = fake.agent_reply(int(ticket), "Will never arrive.")
    await until(lambda: fake.messages(int(ticket))[-1]["status"] == "failed", timeout=5)
    assert [a.status for d in fake.deliveries("message_created") for a in d.attempts][-1] == 401
    assert message["content"] == "Will never arrive."
    assert await _outbound_from_backend(live) == []
    assert relay[0].received == []


async def test_a_replayed_delivery_makes_no_second_reply(
    make_daemon: Any, driver: ChatwootDriver, fake: FakeChatwoot, relay: tuple[Relay, int]
) -> None:
    live, _, _, ticket = await _started(make_daemon, driver, relay)
    fake.agent_reply(int(ticket), "Only once, please.")
    await until(lambda: len(relay[0].received) == 1)
    delivery = next(d for d in fake.deliveries("message_created") if "Only once" in str(d.payload))
    again = await fake.replay(delivery.delivery_id, fresh=False)  # byte for byte
    retried = await fake.replay(delivery.delivery_id, fresh=True)  # re-signed, same id
    assert (again.status, retried.status) == (200, 200)
    await asyncio.sleep(0.5)
    assert len(relay[0].received) == 1
    assert len(await _outbound_from_backend(live)) == 1


async def test_an_answer_before_helpline_has_the_create_answer_is_not_lost(
    make_daemon: Any, driver: ChatwootDriver, fake: FakeChatwoot, relay: tuple[Relay, int]
) -> None:
    driver.arm(DelayThenCommit(2.0), on="create")  # made at once, answered 2 s later
    live, port = await daemon_with_mail(
        make_daemon, relay[1], core=f"[backends.{NAME}]\n{driver.section()}\n"
    )
    first = await customer_writes(live, port)
    conversation = first["data"]["conversation_id"]
    await until(lambda: len(driver.tickets(conversation)) == 1)
    assert _ref_states(live) == ["pending"]
    [ticket] = driver.tickets(conversation)
    fake.agent_reply(int(ticket), "Quick answer.")
    await until(lambda: len(relay[0].received) == 1)
    assert "Quick answer." in relay[0].received[0].get_body(("plain",)).get_content()
    await until(lambda: live.daemon.board.engine(NAME).stats.delivered >= 1)
    body = {"from": {"email": "ann@example.org"}, "text": "Thanks!"}
    await live.post("/v1/messages", body)
    await until(lambda: "Thanks!" in texts(driver.messages(ticket), "customer"))
    assert driver.tickets(conversation) == [ticket]
    assert texts(driver.messages(ticket), "customer") == ["It smokes", "Thanks!"]


# -- the echo of helpline's own writes -------------------------------------------
@pytest.mark.parametrize("guard", ["source_id marker", "api user id"])
async def test_helplines_own_writes_coming_back_are_not_agent_replies(
    make_daemon: Any, relay: tuple[Relay, int], guard: str
) -> None:
    # A version that drops message source_id leaves only the author to tell them apart.
    marker = guard == "source_id marker"
    with FakeChatwoot(honour_message_source_id=marker) as fake:
        extra = "" if marker else f"api_user_id = {fake.api_user_id}\n"
        driver = ChatwootDriver(fake, extra)

        async def start(*args: Any, **kwargs: Any) -> LiveDaemon:
            live: LiveDaemon = await make_daemon(*args, **kwargs)
            fake.set_webhook(f"{live.url}/hooks/{NAME}")
            return live

        live, _, conversation, ticket = await _started(start, driver, relay)
        for body in (
            {"text": "A colleague's note.", "internal": True},
            {"text": "We sent a technician.", "author": {"kind": "human", "name": "Sam"}},
        ):
            status, _, _ = await live.post(f"/v1/conversations/{conversation}/replies", body)
            assert status == 201
        await until(lambda: len(driver.messages(ticket)) == 3)
        assert texts(driver.messages(ticket), "agent") == ["We sent a technician."]
        assert texts(driver.messages(ticket), "note") == ["A colleague's note."]
        await fake.wait_deliveries(3, event="message_created")  # every echo answered
        await asyncio.sleep(0.3)
        assert len(relay[0].received) == 1  # the reply, mailed once by smtp_out
        assert await _outbound_from_backend(live) == []
        outgoing = [m for m in fake.messages(int(ticket)) if m["message_type"] == "outgoing"]
        assert {m["author"]["id"] for m in outgoing} == {fake.api_user_id}


# -- idempotency handles ---------------------------------------------------------
@pytest.mark.parametrize("fault", [CommitThenReset(), Status(503, {"error": "busy"})])
async def test_a_first_message_with_files_lost_after_the_conversation_is_posted_once(
    make_daemon: Any,
    driver: ChatwootDriver,
    fake: FakeChatwoot,
    relay: tuple[Relay, int],
    fault: Fault,
) -> None:
    # Files cannot ride on the conversation create: the first message is a second request,
    # and the lookup of the next attempt finishes the create instead of making another.
    driver.arm(fault, on="add")
    live, port = await daemon_with_mail(
        make_daemon, relay[1], core=f"[backends.{NAME}]\n{driver.section()}\n"
    )
    msg = mail("Ann <ann@example.org>", "support@example.com", "Invoice", "See the bill")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="bill.pdf")
    await asyncio.to_thread(send, port, msg, ["support@example.com"])
    [event] = await inbound(live, 1)
    await until(lambda: "created" in _ref_states(live))
    [ticket] = driver.tickets(event["data"]["conversation_id"])
    [opened] = fake.messages(int(ticket))
    assert opened["content"].strip() == "See the bill"
    assert opened["attachments"] == [("bill.pdf", "application/pdf", PDF)]
    assert opened["source_id"] == event["id"]
    assert len(fake.recorded("POST", r"/conversations$")) == 1  # looked up, never re-made
    assert fake.recorded("GET", r"/contacts/\d+/conversations$")


async def test_the_first_message_rides_on_the_create(
    make_daemon: Any, driver: ChatwootDriver, fake: FakeChatwoot, relay: tuple[Relay, int]
) -> None:
    _, _, conversation, ticket = await _started(make_daemon, driver, relay)
    [create] = fake.recorded("POST", r"/conversations$")
    sent = json.loads(create.body)
    assert sent["source_id"] == f"hl_{conversation}"
    assert sent["custom_attributes"]["helpline_cid"] == conversation
    assert sent["message"]["message_type"] == "incoming"
    assert sent["message"]["source_id"].startswith("evt_")
    assert not fake.recorded("POST", rf"/conversations/{ticket}/messages$")
    assert texts(driver.messages(ticket), "customer") == ["It smokes"]


async def test_a_lost_message_answer_is_checked_by_source_id(
    make_daemon: Any, driver: ChatwootDriver, fake: FakeChatwoot, relay: tuple[Relay, int]
) -> None:
    live, _, conversation, ticket = await _started(make_daemon, driver, relay)
    driver.arm(CommitThenReset(), on="add")
    body = {"from": {"email": "ann@example.org"}, "text": "Still smoking."}
    _, ack, _ = await live.post("/v1/messages", body)
    await until(lambda: len(fake.recorded("GET", rf"/conversations/{ticket}/messages$")) >= 1)
    await asyncio.sleep(0.3)
    assert texts(driver.messages(ticket), "customer") == ["It smokes", "Still smoking."]
    assert len(fake.messages_by_source_id(ack["event_id"])) == 1
    assert driver.tickets(conversation) == [ticket]


@pytest.mark.parametrize("filter_refused", [False, True])
async def test_a_chatwoot_contact_with_the_customers_email_is_adopted(
    make_daemon: Any,
    driver: ChatwootDriver,
    fake: FakeChatwoot,
    relay: tuple[Relay, int],
    filter_refused: bool,
) -> None:
    from tests.unit.test_fake_chatwoot import new_contact

    made = await new_contact(fake, name="Ann (from the web widget)", email="ann@example.org")
    if filter_refused:  # a version whose contact filter lacks the attribute: search instead
        refusal = {"error": "Invalid attribute key - [email]"}
        fake.arm(Status(422, refusal), method="POST", path=r"/contacts/filter$")
    _, _, _, ticket = await _started(make_daemon, driver, relay)
    [conv] = [t for t in fake.tickets() if str(t["id"]) == ticket]
    assert conv["contact_id"] == made["contact"]["id"]
    assert conv["source_id"].startswith("hl_conv_")
    assert len(fake.contacts()) == 1
    assert bool(fake.recorded("GET", r"/contacts/search$")) is filter_refused


# -- attachments both ways ---------------------------------------------------------
async def test_attachments_reach_the_conversation_and_the_customer(
    make_daemon: Any, driver: ChatwootDriver, fake: FakeChatwoot, relay: tuple[Relay, int]
) -> None:
    _, port = await daemon_with_mail(
        make_daemon, relay[1], core=f"[backends.{NAME}]\n{driver.section()}\n"
    )
    msg = mail("Ann <ann@example.org>", "support@example.com", "Invoice", "See the bill")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="bill.pdf")
    await asyncio.to_thread(send, port, msg, ["support@example.com"])
    await until(lambda: bool(fake.tickets()))
    ticket = fake.tickets()[0]["id"]
    await until(lambda: bool(fake.messages(ticket)))
    [first] = fake.messages(ticket)
    assert first["content"].strip() == "See the bill"
    assert first["attachments"] == [("bill.pdf", "application/pdf", PDF)]

    fake.agent_reply(
        ticket, "Corrected bill attached.", attachments=[("fixed.pdf", "application/pdf", PDF)]
    )
    await until(lambda: len(relay[0].received) == 1)
    [mailed] = relay[0].received
    [part] = list(mailed.iter_attachments())
    assert part.get_filename() == "fixed.pdf"
    assert part.get_content() == PDF
    assert "Corrected bill attached." in mailed.get_body(("plain",)).get_content()


# -- start-up check, credentials, config ---------------------------------------------
async def test_a_website_inbox_fails_the_start_up_check_visibly(
    make_daemon: Any, fake: FakeChatwoot
) -> None:
    driver = ChatwootDriver(fake)
    section = driver.section().replace(
        f"inbox_id = {fake.api_inbox_id}", f"inbox_id = {fake.web_inbox_id}"
    )
    live: LiveDaemon = await make_daemon(f"[backends.{NAME}]\n{section}")

    async def checked() -> dict[str, Any]:
        return await _health(live)

    deadline = asyncio.get_running_loop().time() + 5
    while (health := await checked())["last_error"] is None:
        assert asyncio.get_running_loop().time() < deadline, health
        await asyncio.sleep(0.05)
    assert health["state"] == "degraded"
    assert "API-channel inbox" in health["last_error"]


async def test_refused_credentials_degrade_the_backend_and_park_nothing(
    make_daemon: Any, fake: FakeChatwoot
) -> None:
    section = ChatwootDriver(fake).section().replace(f'token = "{TOKEN}"', 'token = "wrong"')
    live: LiveDaemon = await make_daemon(f"[backends.{NAME}]\n{section}")
    body = {"from": {"email": "kim@example.org"}, "text": "Anyone there?"}
    assert (await live.post("/v1/messages", body))[0] == 201

    async def view() -> dict[str, Any]:
        return dict((await live.get(f"/v1/backends/{NAME}"))[1])

    deadline = asyncio.get_running_loop().time() + 5
    while not ((shown := await view())["retries"] >= 2 and shown["authenticated"] is False):
        assert asyncio.get_running_loop().time() < deadline, shown
        await asyncio.sleep(0.05)
    assert shown["state"] == "degraded" and shown["dead_letters"] == 0
    assert "Invalid Access Token" in shown["last_error"]
    assert fake.tickets() == []


def test_replies_need_a_secret_and_the_url_is_the_base() -> None:
    base = {"url": "https://chat.example.com", "account_id": 1, "inbox_id": 3, "token": "t"}
    with pytest.raises(ValidationError, match="webhook_secret"):
        ChatwootConfig.model_validate(base)
    assert ChatwootConfig.model_validate(base | {"replies": False}).replies is False
    with pytest.raises(ValidationError, match="base URL"):
        ChatwootConfig.model_validate(
            base | {"url": "https://chat.example.com/api/v1/accounts/1", "url_token": "x"}
        )


def _ref_states(live: LiveDaemon) -> list[str]:
    with sqlite3.connect(live.daemon.store.path) as db:
        return [r[0] for r in db.execute("SELECT state FROM backend_refs WHERE kind = 'ticket'")]


def _user_map(live: LiveDaemon) -> dict[str, str]:
    with sqlite3.connect(live.daemon.store.path) as db:
        rows = db.execute("SELECT local_id, remote_id FROM backend_refs WHERE kind = 'user'")
        return {local: remote for local, remote in rows}


# -- contact merges ----------------------------------------------------------------------
async def test_a_contact_merge_in_helpline_merges_the_chatwoot_contacts_once(
    make_daemon: Any, driver: ChatwootDriver, fake: FakeChatwoot, relay: tuple[Relay, int]
) -> None:
    live, _ = await daemon_with_mail(
        make_daemon, relay[1], core=f"[backends.{NAME}]\n{driver.section()}\n"
    )
    _, ann, _ = await live.post("/v1/messages", {"from": {"email": "ann@example.org"}, "text": "A"})
    await until(lambda: len(driver.tickets(ann["conversation_id"])) == 1)
    # The phone contact's conversation create is made but its answer is lost: the contact
    # reaches the user map through the lookup that adopts the conversation.
    fake.arm(CommitThenReset(), method="POST", path=r"/conversations$")
    _, phone, _ = await live.post("/v1/messages", {"from": {"phone": "+4930555666"}, "text": "B"})
    await until(lambda: len(driver.tickets(phone["conversation_id"])) == 1)
    await until(lambda: len(_user_map(live)) == 2)
    by_id = {t["id"]: t for t in fake.tickets()}
    [ann_conv], [phone_conv] = (
        driver.tickets(ann["conversation_id"]),
        driver.tickets(phone["conversation_id"]),
    )
    ann_contact = by_id[int(ann_conv)]["contact_id"]
    phone_contact = by_id[int(phone_conv)]["contact_id"]
    assert _user_map(live) == {
        ann["contact_id"]: str(ann_contact),
        phone["contact_id"]: str(phone_contact),
    }

    # The first merge is carried out but its answer is lost too: the repeat finds no mergee
    # (404), which counts as done once the base is there and the mergee is not.
    fake.arm(CommitThenReset(), method="POST", path=r"/actions/contact_merge$")
    both = {"email": "ann@example.org", "phone": "+4930555666"}
    status, merged, _ = await live.post("/v1/messages", {"from": both, "text": "C"}, token="crm")
    assert status == 201 and merged["contact_id"] == ann["contact_id"]
    await until(lambda: _user_map(live).get(phone["contact_id"]) == str(ann_contact))
    calls = fake.recorded("POST", r"/actions/contact_merge$")
    assert [c.status for c in calls] == [0, 404]
    for call in calls:
        assert json.loads(call.body) == {
            "base_contact_id": ann_contact,
            "mergee_contact_id": phone_contact,
        }
    assert phone_contact not in {c["id"] for c in fake.contacts()}
    assert {t["id"]: t["contact_id"] for t in fake.tickets()}[int(phone_conv)] == ann_contact
    await until(lambda: _in_flight(live) == 0)
    shown = dict((await live.get(f"/v1/backends/{NAME}"))[1])
    assert shown["dead_letters"] == 0
    assert len(fake.recorded("POST", r"/actions/contact_merge$")) == 2  # done: no third try


def _in_flight(live: LiveDaemon) -> int:
    health = live.daemon.readiness()[1]["components"][f"backends.{NAME}"]
    return int(health["counters"]["in_flight"])


# -- the webhook's rules, without a server ---------------------------------------------
def test_the_signature_of_the_reference_vector_is_accepted_and_others_are_not() -> None:
    body = b'{"event":"message_created","id":1}'
    headers = {
        "X-Chatwoot-Timestamp": "1700000000",
        "X-Chatwoot-Signature": (
            "sha256=823a1a725ba7190adb3be9ac276562a81e1baa43c941297cb27a162de29d94ed"
        ),
    }
    keys: dict[str, Any] = {"scheme": "timestamped", "url_token": None, "tolerance": 300}
    verify(headers, {}, body, secret="cw-test-secret", now=1700000100, **keys)
    with pytest.raises(Refused, match="tolerance"):
        verify(headers, {}, body, secret="cw-test-secret", now=1700000301, **keys)
    with pytest.raises(Refused, match="does not match"):
        verify(headers, {}, body + b" ", secret="cw-test-secret", now=1700000000, **keys)
    with pytest.raises(Refused, match="does not match"):  # a fork's body-only signature
        verify(
            headers, {}, body, secret="cw-test-secret", now=1700000000, **keys | {"scheme": "body"}
        )
    with pytest.raises(Refused, match="token"):
        verify({}, {"token": "nope"}, body, secret=None, now=0, **keys | {"url_token": "yes"})
    verify({}, {"token": "yes"}, body, secret=None, now=0, **keys | {"url_token": "yes"})


def _payload(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": "message_created",
        "id": 7,
        "content": "Hello",
        "message_type": "outgoing",
        "private": False,
        "source_id": None,
        "sender": {"id": 2, "name": "Agent Smith", "type": "user"},
        "conversation": {"id": 3, "inbox_id": 1, "custom_attributes": {"helpline_cid": "c1"}},
        "inbox": {"id": 1},
    }
    return body | over


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"event": "message_updated"}, "event"),
        ({"message_type": "incoming"}, "message_type"),
        ({"message_type": "template"}, "message_type"),  # a CSAT survey
        ({"private": True}, "private"),
        ({"source_id": "evt_01ABC"}, "own write"),
        ({"sender": {"id": 1, "type": "user"}}, "API user"),
        ({"sender": {"id": 5, "type": "agent_bot"}}, "sender type"),
        ({"inbox": {"id": 9}}, "not helpline's"),
        ({"content": " "}, "no text"),
    ],
)
def test_only_an_agents_public_answer_is_a_reply(over: dict[str, Any], why: str) -> None:
    found = agent_message(_payload(**over), inbox_id=1, api_user_id=1, marker="helpline_cid")
    assert isinstance(found, str) and why in found


def test_an_agents_answer_carries_its_ids_marker_and_files() -> None:
    url = "https://chat.example.com/rails/active_storage/blobs/redirect/xyz/bill%201.pdf"
    payload = _payload(attachments=[{"id": 4, "data_url": url}])
    found = agent_message(payload, inbox_id=1, api_user_id=None, marker="helpline_cid")
    assert isinstance(found, AgentMessage)
    assert (found.ticket_id, found.message_id, found.marker) == ("3", 7, "c1")
    assert found.author == "Agent Smith" and found.files == [("bill 1.pdf", url)]
