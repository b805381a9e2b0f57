"""The freshdesk backend against the Freshdesk fake: the shared contract, then what is
Freshdesk's own (the unsigned webhook, the lookup by requester, contacts, attachments)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, Literal

import aiohttp
import orjson
import pytest
from pydantic import ValidationError

from gateway.backends.freshdesk_config import FreshdeskConfig
from tests.backend_contract import NAME, BackendContract, Seen, texts
from tests.conftest import LiveDaemon, until
from tests.fakes.freshdesk import FakeFreshdesk
from tests.fakes.harness import CommitThenReset, DelayThenCommit, Fault, Status
from tests.integration import test_outbound
from tests.integration.test_outbound import Relay, customer_writes, daemon_with_mail
from tests.integration.test_smtp import mail, send

relay = test_outbound.relay  # the contract's SMTP relay fixture, also used below
SECRET = "s3cret-hook-token"
HEADER = "X-Helpline-Token"
PDF = b"%PDF-1.4\n% tiny\n" + bytes(range(256))


class FreshdeskDriver:
    """The contract's view of the fake; `daemon_url` is set when a daemon starts."""

    type = "freshdesk"

    def __init__(self, fake: FakeFreshdesk) -> None:
        self.fake = fake
        self.daemon_url: str | None = None
        self.extra = ""  # more [backends.desk] keys for a vendor test
        self.api_key = fake.api_key

    def section(self) -> str:
        return (
            f'type = "freshdesk"\nurl = "{self.fake.url}"\napi_key = "{self.api_key}"\n'
            'retry_base = "50ms"\nretry_cap = "1s"\ntimeout = "5s"\n'
            f'webhook_secret = "{SECRET}"\n{self.extra}'
        )

    def arm(self, fault: Fault, on: Literal["create", "add"], times: int = 1) -> None:
        path = r"^/api/v2/tickets$" if on == "create" else r"^/api/v2/tickets/\d+/notes$"
        self.fake.arm(fault, method="POST", path=path, times=times)

    def refusal(self) -> Status:
        error = {"field": "body", "message": "It should be a/an String", "code": "invalid_value"}
        return Status(400, {"description": "Validation failed", "errors": [error]})

    def tickets(self, conversation_id: str) -> list[str]:
        return [str(t["id"]) for t in self.fake.tickets_by_marker(conversation_id)]

    def messages(self, ticket_id: str) -> list[Seen]:
        ticket = self.fake.ticket(int(ticket_id))
        assert ticket is not None
        seen = [Seen(ticket["description_text"], "customer")]
        for row in self.fake.conversations(int(ticket_id)):
            kind = "customer" if row["incoming"] else "note" if row["private"] else "agent"
            seen.append(Seen(row["body_text"], kind))
        return seen

    def resolved(self, ticket_id: str) -> bool:
        ticket = self.fake.ticket(int(ticket_id))
        return ticket is not None and ticket["status"] == 4

    def point_webhook(self, **hook: Any) -> None:
        """The admin's automation rule, calling the running daemon's /hooks/desk."""
        assert self.daemon_url is not None, "no daemon started yet"
        hook.setdefault("headers", {HEADER: SECRET})
        hook.setdefault("on_notes", True)  # a second rule "Note is added": more to filter
        self.fake.set_webhook(f"{self.daemon_url}/hooks/{NAME}", **hook)

    async def agent_reply(self, ticket_id: str, text: str, *, public: bool = True) -> None:
        if self.fake.hooks.hook is None:
            self.point_webhook()
        self.fake.agent_reply(int(ticket_id), f"<p>{text}</p>", public=public)


@pytest.fixture
def fake() -> Iterator[FakeFreshdesk]:
    with FakeFreshdesk() as server:
        yield server


@pytest.fixture
def driver(fake: FakeFreshdesk) -> FreshdeskDriver:
    return FreshdeskDriver(fake)


@pytest.fixture
def make_daemon(make_daemon: Callable[..., Any], driver: FreshdeskDriver) -> Callable[..., Any]:
    """conftest's make_daemon, telling the driver where the daemon listens (for the hook)."""

    async def start(*args: Any, **kwargs: Any) -> LiveDaemon:
        live: LiveDaemon = await make_daemon(*args, **kwargs)
        driver.daemon_url = live.url
        return live

    return start


class TestFreshdesk(BackendContract):
    pass


# -- Freshdesk's own --------------------------------------------------------------------


async def _desk(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> tuple[LiveDaemon, int]:
    return await daemon_with_mail(  # type: ignore[no-any-return]
        make_daemon, relay[1], core=f"[backends.{NAME}]\n{driver.section()}\n"
    )


async def _ticket_of(driver: FreshdeskDriver, conversation: str) -> int:
    await until(lambda: len(driver.tickets(conversation)) == 1)
    [ticket] = driver.tickets(conversation)
    return int(ticket)


async def _outbound(live: LiveDaemon) -> list[dict[str, Any]]:
    return [e for e in await live.stream() if e["type"] == "helpline.message.outbound.v1"]


async def _view(live: LiveDaemon) -> dict[str, Any]:
    _, view, _ = await live.get(f"/v1/backends/{NAME}")
    return dict(view)


def _health(live: LiveDaemon) -> dict[str, Any]:
    return dict(live.daemon.readiness()[1]["components"][f"backends.{NAME}"])


async def test_a_webhook_without_the_secret_is_refused_and_a_repeat_is_one_reply(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> None:
    live, port = await _desk(make_daemon, driver, relay)
    first = await customer_writes(live, port)
    ticket = await _ticket_of(driver, first["data"]["conversation_id"])
    driver.point_webhook()
    driver.fake.agent_reply(ticket, "<p>Try the other plug.</p>")
    [delivery] = await driver.fake.wait_deliveries(
        lambda ds: len(ds) == 1 and ds[0].state == "delivered"
    )
    await until(lambda: len(relay[0].received) == 1)

    wrong = await driver.fake.forge(delivery.number, headers={HEADER: SECRET[:-1] + "X"})
    missing = await driver.fake.forge(delivery.number, drop=(HEADER,))
    assert [a.status for a in wrong.attempts + missing.attempts] == [401, 401]
    again = await driver.fake.replay(delivery.number)  # Freshdesk's retry after a lost answer
    assert again.attempts[0].status == 200
    await asyncio.sleep(0.5)
    assert len(relay[0].received) == 1
    assert len(await _outbound(live)) == 1
    counters = _health(live)["counters"]
    assert counters["replies"] == 1 and counters["replies_refused"] == 2


async def test_basic_auth_is_checked_when_configured(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> None:
    driver.extra = 'webhook_user = "freshdesk"\nwebhook_password = "pw-0123"\n'
    live, port = await _desk(make_daemon, driver, relay)
    first = await customer_writes(live, port)
    ticket = await _ticket_of(driver, first["data"]["conversation_id"])
    driver.point_webhook(basic_auth=("freshdesk", "wrong"))
    driver.fake.agent_reply(ticket, "<p>First answer.</p>")
    [refused] = await driver.fake.wait_deliveries(lambda ds: bool(ds and ds[0].attempts))
    assert refused.attempts[0].status == 401
    driver.point_webhook(basic_auth=("freshdesk", "pw-0123"))
    driver.fake.agent_reply(ticket, "<p>Second answer.</p>")
    # the refused call was only a nudge: the second read takes both answers, in order
    await until(lambda: len(relay[0].received) == 2)
    bodies = [m.get_body(("plain",)).get_content().strip() for m in relay[0].received]
    assert bodies == ["First answer.", "Second answer."]


async def test_helplines_own_writes_and_notes_are_not_taken_as_replies(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> None:
    live, port = await _desk(make_daemon, driver, relay)
    first = await customer_writes(live, port)
    conversation = first["data"]["conversation_id"]
    ticket = await _ticket_of(driver, conversation)
    driver.point_webhook()
    # An agent answers through helpline's API: helpline mails it and copies it to the ticket
    # as a public note by its API agent, which fires the "Note is added" rule.
    reply = {"text": "Sent from the dashboard.", "author": {"kind": "human", "name": "Sam"}}
    status, _, _ = await live.post(f"/v1/conversations/{conversation}/replies", reply)
    assert status == 201
    await until(lambda: len(driver.fake.deliveries()) == 1)
    [copied] = [c for c in driver.fake.conversations(ticket) if not c["incoming"]]
    assert copied["user_id"] == driver.fake.api_agent and copied["private"] is False
    assert "Sent from the dashboard." in copied["body_text"] and "Sam" in copied["body_text"]
    # a colleague's private note fires it too
    driver.fake.agent_reply(ticket, "<p>Internal only.</p>", public=False)
    await driver.fake.wait_deliveries(
        lambda ds: len(ds) == 2 and all(d.state == "delivered" for d in ds)
    )
    await asyncio.sleep(0.3)
    assert len(await _outbound(live)) == 1  # only the dashboard's own
    assert len(relay[0].received) == 1
    status, _, _ = await live.post(f"/v1/conversations/{conversation}/resolve", {})
    await until(lambda: driver.resolved(str(ticket)))
    await live.post(f"/v1/conversations/{conversation}/reopen", {})
    await until(lambda: driver.fake.ticket(ticket)["status"] == 2)  # type: ignore[index]


async def test_an_existing_contact_is_adopted_and_a_lost_create_found_by_listing(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> None:
    fake = driver.fake
    fake.search_lag = 3600.0  # the search index would not see the ticket: only listing can
    headers = {"Authorization": aiohttp.encode_basic_auth(fake.api_key, "X")}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(
            f"{fake.url}/api/v2/contacts", json={"name": "Ann", "email": "ann@example.org"}
        ) as answer,
    ):
        assert answer.status == 201
        ann = (await answer.json())["id"]
    driver.arm(CommitThenReset(), on="create")
    live, port = await _desk(make_daemon, driver, relay)
    first = await customer_writes(live, port)
    conversation = first["data"]["conversation_id"]
    await live.post("/v1/messages", {"from": {"email": "ann@example.org"}, "text": "Again."})
    ticket_id = await _ticket_of(driver, conversation)
    await until(lambda: len(texts(driver.messages(str(ticket_id)), "customer")) == 2)
    [ticket] = fake.tickets_by_marker(conversation)
    assert ticket["requester_id"] == ann and len(fake.contacts()) == 1
    assert ticket["source"] == 1 and ticket["tags"] == ["helpline"]
    lookups = fake.recorded("GET", r"^/api/v2/tickets$")
    assert lookups and lookups[0].query["requester_id"] == str(ann)
    # the follow-up is the customer's own public note
    [note] = fake.conversations(ticket["id"])
    assert (note["incoming"], note["private"], note["user_id"]) == (True, False, ann)
    assert f"<!-- helpline:{first['id']}" not in note["body"]  # each event its own marker
    assert "<!-- helpline:evt_" in note["body"]
    assert _health(live)["counters"]["tickets_adopted"] == 1


async def test_an_answer_right_after_the_create_waits_for_the_map(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> None:
    fake = driver.fake
    driver.arm(DelayThenCommit(1.0), on="create")  # the ticket exists before helpline knows it
    live, port = await _desk(make_daemon, driver, relay)
    await customer_writes(live, port)
    await until(lambda: bool(fake.tickets()))
    driver.point_webhook()
    fake.agent_reply(fake.tickets()[0]["id"], "<p>Auto: we are on it.</p>")
    await until(lambda: len(relay[0].received) == 1)
    # a ticket that is not helpline's is answered 200 and left alone
    other = {"email": "bob@example.org", "subject": "Phone call", "description": "<p>x</p>"}
    headers = {"Authorization": aiohttp.encode_basic_auth(fake.api_key, "X")}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{fake.url}/api/v2/tickets", json=other) as answer,
    ):
        foreign = (await answer.json())["id"]
    driver.point_webhook(condition=None)
    fake.agent_reply(foreign, "<p>Not for helpline.</p>")
    await fake.wait_deliveries(lambda ds: len(ds) == 2 and ds[1].state == "delivered")
    await asyncio.sleep(0.3)
    assert len(await _outbound(live)) == 1 and len(relay[0].received) == 1


async def test_a_lost_follow_up_answer_posts_no_second_note(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> None:
    live, port = await _desk(make_daemon, driver, relay)
    first = await customer_writes(live, port)
    conversation = first["data"]["conversation_id"]
    ticket = await _ticket_of(driver, conversation)
    driver.arm(CommitThenReset(), on="add")  # the note lands, its answer is lost
    body = {"from": {"email": "ann@example.org"}, "text": "Once only."}
    _, second, _ = await live.post("/v1/messages", body)
    await until(lambda: len(driver.fake.recorded("GET", r"/conversations$")) >= 1)
    await until(lambda: _health(live)["counters"]["delivered"] >= 2)
    await asyncio.sleep(0.3)
    notes = driver.fake.conversations(ticket)
    assert [n["body_text"] for n in notes] == ["Once only."]
    assert f"<!-- helpline:{second['event_id']} -->" in notes[0]["body"]
    assert len(driver.fake.recorded("POST", r"/notes$")) == 1


async def test_attachments_go_both_ways(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> None:
    _, port = await _desk(make_daemon, driver, relay)
    msg = mail("Ann <ann@example.org>", "support@example.com", "Bill", "See the bill")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="bill.pdf")
    await asyncio.to_thread(send, port, msg, ["support@example.com"])
    await until(lambda: bool(driver.fake.tickets()))
    [created] = driver.fake.tickets()
    [attached] = created["attachments"]
    assert (attached["name"], attached["size"]) == ("bill.pdf", len(PDF))
    assert created["description_text"].strip() == "See the bill"

    driver.point_webhook()
    driver.fake.agent_reply(
        created["id"],
        "<p>Signed copy attached.</p>",
        attachments=[("signed.pdf", "application/pdf", PDF + b"signed")],
    )
    await until(lambda: len(relay[0].received) == 1)
    [sent] = relay[0].received
    assert "Signed copy attached." in sent.get_body(("plain",)).get_content()
    [part] = list(sent.iter_attachments())
    assert part.get_filename() == "signed.pdf" and part.get_content() == PDF + b"signed"


async def test_a_missing_marker_field_shows_in_health(
    make_daemon: Any, relay: tuple[Relay, int]
) -> None:
    with FakeFreshdesk(ticket_fields={"cf_other": "text"}) as fake:
        driver = FreshdeskDriver(fake)
        live, _ = await _desk(make_daemon, driver, relay)
        await until(lambda: "cf_helpline_cid" in str(_health(live).get("last_error")))
        assert "no ticket field cf_helpline_cid" in _health(live)["last_error"]


async def test_wrong_credentials_degrade_the_backend_without_dead_letters(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> None:
    driver.api_key = "not-the-key"
    live, _ = await _desk(make_daemon, driver, relay)
    await live.post("/v1/messages", {"from": {"email": "x@example.org"}, "text": "Hello?"})
    await until(lambda: _health(live)["state"] == "degraded")  # the start-up check first
    deadline = asyncio.get_running_loop().time() + 8
    while (view := await _view(live))["authenticated"] is not False:  # then the delivery
        assert asyncio.get_running_loop().time() < deadline, view
        await asyncio.sleep(0.05)
    assert view["dead_letters"] == 0
    assert driver.fake.tickets() == []


def test_config_errors_name_the_problem() -> None:
    base = {"url": "https://acme.freshdesk.com/api/v2/", "api_key": "k"}
    config = FreshdeskConfig.model_validate(base)
    assert config.url == "https://acme.freshdesk.com" and config.source_of("chat") == 7
    assert config.hook_enabled is False
    for bad, words in (
        ({"marker_field": "helpline_cid"}, "cf_"),
        ({"sources": {"fax": 3}}, "unknown channel"),
        ({"webhook_user": "u"}, "go together"),
        ({"url": "acme.freshdesk.com"}, "https://"),
    ):
        with pytest.raises(ValidationError, match=words):
            FreshdeskConfig.model_validate(base | bad)


async def test_a_contact_merge_in_helpline_merges_the_contacts_once(
    make_daemon: Any, driver: FreshdeskDriver, relay: tuple[Relay, int]
) -> None:
    fake = driver.fake
    # The first merge is carried out but its answer is lost: the retry finds the
    # secondary gone (400 secondary_contact_ids), which counts as done, not as a refusal.
    fake.arm(CommitThenReset(), method="POST", path=r"^/api/v2/contacts/merge$")
    live, _ = await _desk(make_daemon, driver, relay)
    _, ann, _ = await live.post("/v1/messages", {"from": {"email": "ann@example.org"}, "text": "A"})
    _, phone, _ = await live.post("/v1/messages", {"from": {"phone": "+4930555666"}, "text": "B"})
    ann_ticket = await _ticket_of(driver, ann["conversation_id"])
    phone_ticket = await _ticket_of(driver, phone["conversation_id"])
    ann_user = fake.ticket(ann_ticket)["requester_id"]  # type: ignore[index]
    phone_user = fake.ticket(phone_ticket)["requester_id"]  # type: ignore[index]
    assert ann_user != phone_user

    both = {"email": "ann@example.org", "phone": "+4930555666"}
    status, merged, _ = await live.post("/v1/messages", {"from": both, "text": "C"}, token="crm")
    assert status == 201 and merged["contact_id"] == ann["contact_id"]

    def merges() -> list[Any]:
        return [r for r in fake.recorded("POST", r"^/api/v2/contacts/merge$") if r.status]

    await until(lambda: len(merges()) == 1)  # the answered repeat (the first one was cut)
    calls = fake.recorded("POST", r"^/api/v2/contacts/merge$")
    assert len(calls) == 2 and calls[1].status == 400
    for call in calls:
        assert orjson.loads(call.body) == {
            "primary_contact_id": ann_user,
            "secondary_contact_ids": [phone_user],
        }
    assert fake.contact(phone_user) is None and fake.contact_merges == {phone_user: ann_user}
    assert fake.ticket(phone_ticket)["requester_id"] == ann_user  # type: ignore[index]
    await until(lambda: _health(live)["counters"]["in_flight"] == 0)
    view = await _view(live)
    assert view["dead_letters"] == 0 and _health(live)["counters"]["parked"] == 0
    assert len(fake.recorded("POST", r"^/api/v2/contacts/merge$")) == 2  # done: no third try
