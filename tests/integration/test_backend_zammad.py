"""The zammad backend against the fake Zammad (tests/fakes/zammad.py), over real sockets.

The shared contract (tests/backend_contract.py) runs first; then what is Zammad's own: the
`condition` lookup and the article `message_id` marker, phone-only customers, the signed
Trigger → Webhook (bad, missing, replayed), helpline's own articles echoed back, attachments
both ways, the start-up check, and refused credentials.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import html_text
import orjson
import pytest

from tests.backend_contract import NAME, BackendContract, Seen, texts
from tests.conftest import LiveDaemon, until
from tests.fakes.harness import CommitThenReset, Fault, Status
from tests.fakes.zammad import FakeZammad
from tests.integration import test_outbound
from tests.integration.test_outbound import Relay, customer_writes, daemon_with_mail
from tests.integration.test_smtp import mail, send

relay = test_outbound.relay  # the SMTP relay fixture, standing in for the team's

API_TOKEN = "zammad-api-token"  # the fake's API user
HOOK_TOKEN = "zammad-hook-token-0123"
PDF = b"%PDF-1.4\n% a small pdf\n" + bytes(range(256)) * 2
PATHS = {"create": r"^/api/v1/tickets$", "add": r"^/api/v1/ticket_articles$"}


class ZammadDriver:
    """The contract's view of the fake Zammad."""

    type = "zammad"

    def __init__(self, fake: FakeZammad) -> None:
        self.fake = fake

    def section(self, **over: str) -> str:
        keys = {
            "type": '"zammad"',
            "url": f'"{self.fake.url}"',
            "token": f'"{API_TOKEN}"',
            "webhook_token": f'"{HOOK_TOKEN}"',
            "retry_base": '"50ms"',
            "retry_cap": '"1s"',
            "timeout": '"5s"',
        }
        keys.update(over)
        return "".join(f"{k} = {v}\n" for k, v in keys.items())

    def arm(self, fault: Fault, on: Literal["create", "add"], times: int = 1) -> None:
        self.fake.arm(fault, method="POST", path=PATHS[on], times=times)

    def refusal(self) -> Status:
        error = "Need at least an 'article body' field."
        return Status(422, {"error": error, "error_human": error})

    def tickets(self, conversation_id: str) -> list[str]:
        return sorted((str(t["id"]) for t in self.fake.tickets_with(conversation_id)), key=int)

    def messages(self, ticket_id: str) -> list[Seen]:
        seen = []
        for article in self.fake.articles(int(ticket_id)):
            body = article["body"] or ""
            if article["content_type"] == "text/html":
                body = html_text.extract_text(body)
            if article["sender"] == "Customer":
                seen.append(Seen(body, "customer"))
            elif article["sender"] == "Agent":
                seen.append(Seen(body, "note" if article["internal"] else "agent"))
        return seen

    def resolved(self, ticket_id: str) -> bool:
        return bool(self.fake.ticket(int(ticket_id))["state"] == "closed")

    async def agent_reply(self, ticket_id: str, text: str, *, public: bool = True) -> None:
        self.fake.agent_reply(int(ticket_id), text, public=public)


@pytest.fixture
def fake() -> Iterator[FakeZammad]:
    zammad = FakeZammad()
    zammad.start()
    try:
        yield zammad
    finally:
        zammad.stop()


@pytest.fixture
def driver(fake: FakeZammad) -> ZammadDriver:
    return ZammadDriver(fake)


@pytest.fixture
async def make_daemon(
    make_daemon: Callable[..., Any], fake: FakeZammad
) -> AsyncIterator[Callable[..., Any]]:
    """The conftest's daemons, with the fake's Trigger → Webhook pointed at each one's
    /hooks/desk (its port is known only once it runs)."""

    async def start(*args: Any, **kwargs: Any) -> LiveDaemon:
        live: LiveDaemon = await make_daemon(*args, **kwargs)
        fake.set_webhook(f"{live.url}/hooks/{NAME}", token=HOOK_TOKEN)
        return live

    yield start


class TestZammad(BackendContract):
    pass


# -- helpers ---------------------------------------------------------------------
async def desk(make_daemon: Any, driver: ZammadDriver, relay_port: int, **over: str) -> Any:
    return await daemon_with_mail(
        make_daemon, relay_port, core=f"[backends.{NAME}]\n{driver.section(**over)}"
    )


async def ticket_for(live: LiveDaemon, port: int, fake: FakeZammad) -> tuple[str, int]:
    """Ann's mail, delivered: its conversation and ticket."""
    first = await customer_writes(live, port)
    conversation = first["data"]["conversation_id"]
    await until(lambda: len(fake.tickets_with(conversation)) == 1, 10)
    return conversation, int(fake.tickets_with(conversation)[0]["id"])


async def outbound(live: LiveDaemon) -> list[dict[str, Any]]:
    return [
        e
        for e in await live.stream()
        if e["type"] == "helpline.message.outbound.v1" and e["source"] == f"/backends/{NAME}"
    ]


async def view(live: LiveDaemon) -> dict[str, Any]:
    _, body, _ = await live.get(f"/v1/backends/{NAME}")
    return dict(body)


# -- the lookup and the markers ------------------------------------------------------
async def test_the_ticket_carries_the_marker_and_lookups_use_the_condition_search(
    make_daemon: Any, driver: ZammadDriver, fake: FakeZammad, relay: tuple[Relay, int]
) -> None:
    fake.search_index_lag = 3600.0  # a plain `query` search would never find the ticket
    driver.arm(CommitThenReset(), on="create")
    live, port = await desk(make_daemon, driver, relay[1])
    conversation, ticket = await ticket_for(live, port, fake)
    shown = fake.ticket(ticket)
    assert shown["helpline_cid"] == conversation and shown["group"] == "Users"
    assert shown["customer"] == "ann@example.org"  # guess:<email> found-or-created her
    [article] = fake.articles(ticket)
    assert (article["sender"], article["type"], article["internal"]) == ("Customer", "web", False)
    [first] = [e for e in await live.stream() if e["type"] == "helpline.message.inbound.v1"]
    assert article["message_id"] == f"<{first['id']}@helpline>"
    await until(lambda: _ref_state(live) == "created")
    searches = [orjson.loads(r.body) for r in fake.recorded("POST", "^/api/v1/tickets/search$")]
    lookup = {"ticket.helpline_cid": {"operator": "is", "value": conversation}}
    assert {"condition": lookup, "limit": 50} in searches
    assert not any("query" in s for s in searches)
    assert len(fake.tickets_with(conversation)) == 1
    health = live.daemon.readiness()[1]["components"][f"backends.{NAME}"]
    assert health["counters"]["tickets_adopted"] == 1


def _ref_state(live: LiveDaemon) -> str | None:
    import sqlite3

    with sqlite3.connect(live.daemon.store.path) as db:
        row = db.execute("SELECT state FROM backend_refs WHERE kind = 'ticket'").fetchone()
    return row[0] if row else None


async def test_a_lost_article_answer_is_checked_by_message_id_not_posted_twice(
    make_daemon: Any, driver: ZammadDriver, fake: FakeZammad, relay: tuple[Relay, int]
) -> None:
    live, port = await desk(make_daemon, driver, relay[1])
    conversation, ticket = await ticket_for(live, port, fake)
    driver.arm(CommitThenReset(), on="add")
    body = {"from": {"email": "ann@example.org"}, "text": "Once only."}
    _, ack, _ = await live.post("/v1/messages", body)
    assert ack["conversation_id"] == conversation
    await until(lambda: bool(fake.recorded("GET", f"^/api/v1/ticket_articles/by_ticket/{ticket}$")))
    await asyncio.sleep(0.3)
    assert texts(driver.messages(str(ticket)), "customer") == ["It smokes", "Once only."]
    marks = [a["message_id"] for a in fake.articles(ticket)]
    assert marks[-1] == f"<{ack['event_id']}@helpline>"


async def test_a_phone_only_customer_becomes_a_zammad_user_without_email(
    make_daemon: Any, driver: ZammadDriver, fake: FakeZammad, relay: tuple[Relay, int]
) -> None:
    live, _ = await desk(make_daemon, driver, relay[1])
    caller = {"from": {"phone": "+49 30 1234567", "name": "Carl Caller"}, "text": "Call me."}
    _, ack, _ = await live.post("/v1/messages", caller)
    conversation = ack["conversation_id"]
    await until(lambda: len(fake.tickets_with(conversation)) == 1, 10)
    users_before = len(fake.users())
    _, again, _ = await live.post("/v1/messages", {**caller, "text": "Still waiting."})
    assert again["conversation_id"] == conversation
    [ticket] = driver.tickets(conversation)
    await until(lambda: len(driver.messages(ticket)) == 2)
    carl = next(u for u in fake.users() if u["id"] == fake.ticket(int(ticket))["customer_id"])
    assert (carl["firstname"], carl["lastname"], carl["email"]) == ("Carl", "Caller", "")
    assert carl["phone"] == "+49301234567"
    articles = fake.articles(int(ticket))
    assert [a["origin_by_id"] for a in articles] == [carl["id"], carl["id"]]
    assert len(fake.users()) == users_before  # the user was remembered, not made again


# -- the webhook -----------------------------------------------------------------
async def test_bad_and_missing_signatures_are_refused(
    make_daemon: Any, driver: ZammadDriver, fake: FakeZammad, relay: tuple[Relay, int]
) -> None:
    live, port = await desk(make_daemon, driver, relay[1])
    _, ticket = await ticket_for(live, port, fake)
    fake.clear_webhook()  # the agent writes; only the tampered deliveries below are sent
    article = fake.agent_reply(ticket, "Forged?")
    fake.set_webhook(f"{live.url}/hooks/{NAME}", token=HOOK_TOKEN)
    bad = fake.emit_tampered(ticket, article["id"], "signature")
    unsigned = fake.emit_tampered(ticket, article["id"], "unsigned")
    await fake.wait_for_deliveries(2)
    for delivery in (bad, unsigned):
        [attempt] = fake.deliveries(delivery)
        assert attempt.status == 401
    assert "X-Hub-Signature" not in fake.deliveries(unsigned)[0].headers
    await asyncio.sleep(0.3)
    assert await outbound(live) == [] and relay[0].received == []
    assert (
        live.daemon.readiness()[1]["components"][f"backends.{NAME}"]["counters"]["replies_refused"]
        == 2
    )


async def test_a_replayed_delivery_is_answered_once(
    make_daemon: Any, driver: ZammadDriver, fake: FakeZammad, relay: tuple[Relay, int]
) -> None:
    live, port = await desk(make_daemon, driver, relay[1])
    _, ticket = await ticket_for(live, port, fake)
    article = fake.agent_reply(ticket, "Try the other socket.")
    [done] = await fake.wait_for_deliveries(1, ok=True)
    await until(lambda: len(relay[0].received) == 1)
    again = await fake.replay(done.delivery_id)  # the same delivery id, body and signature
    assert again.status == 200
    fake.emit(ticket, article["id"])  # a new delivery of the same article
    await fake.wait_for_deliveries(3, ok=True)
    await asyncio.sleep(0.3)
    assert len(relay[0].received) == 1
    [event] = await outbound(live)
    assert event["data"]["text"].strip() == "Try the other socket."
    assert event["data"]["author"]["name"] == "Ada Agent"


async def test_helplines_own_articles_echoed_by_the_webhook_are_not_replies(
    make_daemon: Any, driver: ZammadDriver, fake: FakeZammad, relay: tuple[Relay, int]
) -> None:
    live, port = await desk(make_daemon, driver, relay[1])
    conversation, ticket = await ticket_for(live, port, fake)
    # a careless trigger: every article, any sender, internal or not
    fake.set_webhook(f"{live.url}/hooks/{NAME}", token=HOOK_TOKEN, sender=None, public_only=False)
    await live.post(
        f"/v1/conversations/{conversation}/replies",
        {"text": "Answered from helpline.", "author": {"kind": "human", "name": "Sam"}},
    )
    await live.post(
        f"/v1/conversations/{conversation}/replies", {"text": "A note.", "internal": True}
    )
    await live.post("/v1/messages", {"from": {"email": "ann@example.org"}, "text": "Thanks!"})
    await until(lambda: len(fake.articles(ticket)) == 4)
    fake.agent_reply(ticket, "Colleagues only.", public=False)
    fake.agent_reply(ticket, "By email from Zammad.", type="email")
    await fake.wait_for_deliveries(5, ok=True)
    assert len([d for d in fake.deliveries() if d.status == 200]) == 5
    await asyncio.sleep(0.3)
    assert await outbound(live) == []
    assert [m["To"] for m in relay[0].received] == ["ann@example.org"]  # Sam's, once
    kinds = [(a["sender"], a["type"], a["internal"]) for a in fake.articles(ticket)[:4]]
    assert kinds == [
        ("Customer", "web", False),
        ("Agent", "note", False),  # public, never type email: Zammad does not mail it
        ("Agent", "note", True),
        ("Customer", "web", False),
    ]
    assert fake.articles(ticket)[1]["from"] == "Sam"


# -- attachments ---------------------------------------------------------------------
async def test_attachments_go_both_ways(
    make_daemon: Any, driver: ZammadDriver, fake: FakeZammad, relay: tuple[Relay, int]
) -> None:
    _, port = await desk(make_daemon, driver, relay[1])
    msg = mail("Ann <ann@example.org>", "support@example.com", "Bill", "See attached")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="bill.pdf")
    await asyncio.to_thread(send, port, msg, ["support@example.com"])
    await until(lambda: bool(fake.tickets()), 10)
    ticket = int(fake.tickets()[0]["id"])
    [article] = fake.articles(ticket)
    [file] = article["attachments"]
    assert (file["filename"], file["content_type"], file["data"]) == (
        "bill.pdf",
        "application/pdf",
        PDF,
    )

    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    fake.agent_reply(ticket, "Here is the fixed one.", attachments=[("fix.png", "image/png", png)])
    await until(lambda: len(relay[0].received) == 1, 10)
    [mailed] = relay[0].received
    [part] = list(mailed.iter_attachments())
    assert part.get_filename() == "fix.png" and part.get_content() == png
    downloads = fake.recorded("GET", r"^/api/v1/ticket_attachment/")
    assert [d.headers["Authorization"] for d in downloads] == [f"Token token={API_TOKEN}"]


# -- start-up and credentials ----------------------------------------------------------
async def test_a_missing_marker_attribute_is_reported_and_nothing_is_created(
    make_daemon: Any, relay: tuple[Relay, int]
) -> None:
    bare = FakeZammad(ticket_attributes=())
    bare.start()
    try:
        live, _ = await desk(make_daemon, ZammadDriver(bare), relay[1])
        await live.post("/v1/messages", {"from": {"email": "x@example.org"}, "text": "Hi"})

        def reported() -> bool:
            health = live.daemon.readiness()[1]["components"][f"backends.{NAME}"]
            error = health.get("last_error") or ""
            return health["state"] == "degraded" and "attribute 'helpline_cid' does not" in error

        await until(reported, 10)
        assert (await view(live))["dead_letters"] == 0
        assert bare.tickets() == []  # a ticket without the marker could be made twice
    finally:
        bare.stop()


async def test_refused_credentials_degrade_the_backend_without_dead_letters(
    make_daemon: Any, driver: ZammadDriver, fake: FakeZammad, relay: tuple[Relay, int]
) -> None:
    live, _ = await desk(make_daemon, driver, relay[1], token='"not-the-token"')
    await live.post("/v1/messages", {"from": {"email": "x@example.org"}, "text": "Hi"})

    async def degraded() -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            current = await view(live)
            if current["state"] == "degraded" and current["authenticated"] is False:
                return current
            assert asyncio.get_running_loop().time() < deadline, current
            await asyncio.sleep(0.05)

    current = await degraded()
    assert current["dead_letters"] == 0 and "401" in (current["last_error"] or "")
    assert fake.tickets() == []


def test_config_is_checked() -> None:
    from pydantic import ValidationError

    from gateway.backends.zammad import ZammadConfig

    good = ZammadConfig.model_validate({"url": "https://z.example/api/v1/", "token": "t"})
    assert good.url == "https://z.example" and good.marker_attribute == "helpline_cid"
    assert (good.group, good.resolve_state, good.reopen_state) == ("Users", "closed", "open")
    for bad in ({"url": "z.example"}, {"marker_attribute": "Helpline-CID"}):
        with pytest.raises(ValidationError) as err:
            ZammadConfig.model_validate({"url": "https://z.example", "token": "t", **bad})
        assert re.search(r"url|attribute", str(err.value))
