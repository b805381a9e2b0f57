"""The zendesk backend against a faithful Zendesk fake: the contract, then Zendesk's own ways."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, Literal

import orjson
import pytest

from tests.backend_contract import NAME, BackendContract, Seen, texts
from tests.conftest import LiveDaemon, until
from tests.fakes.harness import CommitThenReset, Fault, Status
from tests.fakes.zendesk import FakeZendesk, invalid
from tests.integration import test_outbound
from tests.integration.test_outbound import Relay, customer_writes, daemon_with_mail

relay = test_outbound.relay  # the SMTP relay fixture, standing in for the team's

SECRET = "zd-webhook-signing-secret"


class ZendeskDriver:
    type = "zendesk"

    def __init__(self, fake: FakeZendesk) -> None:
        self.fake = fake
        self.hook: Any = None

    def section(self) -> str:
        return (
            'type = "zendesk"\n'
            f'url = "{self.fake.url}"\n'
            f'email = "{self.fake.me["email"]}"\n'
            f'token = "{self.fake.api_token}"\n'
            f'webhook_secret = "{SECRET}"\n'
            'retry_base = "50ms"\nretry_cap = "1s"\ntimeout = "5s"\n'
        )

    def connect(self, live: LiveDaemon) -> None:
        self.hook = self.fake.set_webhook(f"{live.url}/hooks/{NAME}", secret=SECRET)

    def arm(self, fault: Fault, on: Literal["create", "add"], times: int = 1) -> None:
        if on == "create":
            self.fake.arm(fault, method="POST", path=r"^/api/v2/tickets(\.json)?$", times=times)
        else:
            self.fake.arm(fault, method="PUT", path=r"^/api/v2/tickets/\d+", times=times)

    def refusal(self) -> Status:
        error = invalid("comment", "Comment body is too long")
        return Status(error.status, error.body)

    def tickets(self, conversation_id: str) -> list[str]:
        return [str(t["id"]) for t in self.fake.tickets(external_id=conversation_id)]

    def messages(self, ticket_id: str) -> list[Seen]:
        ticket = self.fake.ticket(int(ticket_id))
        seen = []
        for comment in self.fake.comments(int(ticket_id)):
            if not comment["public"]:
                kind: Literal["customer", "agent", "note"] = "note"
            elif comment["author_id"] == ticket["requester_id"]:
                kind = "customer"
            else:
                kind = "agent"
            seen.append(Seen(comment["body"], kind))
        return seen

    def resolved(self, ticket_id: str) -> bool:
        return bool(self.fake.ticket(int(ticket_id))["status"] == "solved")

    async def agent_reply(self, ticket_id: str, text: str, *, public: bool = True) -> None:
        assert self.hook is not None, "the webhook is connected when the daemon starts"
        before = len(self.fake.deliveries())
        self.fake.agent_reply(int(ticket_id), text, public=public)
        if public:
            await self.fake.wait_deliveries(before + 1)


@pytest.fixture
def fake() -> Iterator[FakeZendesk]:
    with FakeZendesk(webhook_time_scale=0.01, ticket_update_limit=None) as server:
        yield server


@pytest.fixture
def driver(fake: FakeZendesk, make_daemon: Any) -> ZendeskDriver:
    return ZendeskDriver(fake)


class TestZendesk(BackendContract):
    async def _daemon(self, make_daemon: Any, driver: Any, relay: tuple[Relay, int]) -> Any:
        live, port = await super()._daemon(make_daemon, driver, relay)
        driver.connect(live)
        return live, port


async def _start(
    make_daemon: Any, fake: FakeZendesk, relay: tuple[Relay, int], extra: str = ""
) -> tuple[LiveDaemon, int, ZendeskDriver]:
    driver = ZendeskDriver(fake)
    live, port = await daemon_with_mail(
        make_daemon, relay[1], core=f"[backends.{NAME}]\n{driver.section()}{extra}\n"
    )
    driver.connect(live)
    return live, port, driver


async def test_creates_carry_an_idempotency_key_and_the_customer_is_one_end_user(
    make_daemon: Any, fake: FakeZendesk, relay: tuple[Relay, int]
) -> None:
    fake.arm(CommitThenReset(), method="POST", path=r"^/api/v2/tickets$")
    live, port, driver = await _start(make_daemon, fake, relay)
    event = await customer_writes(live, port)
    conversation = event["data"]["conversation_id"]
    await until(lambda: len(driver.tickets(conversation)) == 1, 10)
    await until(lambda: bool(fake.recorded("GET", r"^/api/v2/tickets$")))
    [create] = fake.recorded("POST", r"^/api/v2/tickets$")  # its answer was lost...
    assert create.headers.get("Idempotency-Key") == f"helpline-{conversation}"
    [lookup] = fake.recorded("GET", r"^/api/v2/tickets$")  # ...so the retry looked first
    assert lookup.query == {"external_id": conversation} and lookup.at > create.at
    ticket = fake.ticket(int(driver.tickets(conversation)[0]))
    requester = fake.user(ticket["requester_id"])
    assert requester["external_id"] == f"hl_{event['data']['contact_id']}"
    assert ticket["tags"] == ["helpline", "helpline_email"]
    await live.post("/v1/messages", {"from": {"email": "ann@example.org"}, "text": "More."})
    await until(lambda: len(fake.comments(ticket["id"])) == 2)
    assert set(fake.ticket(ticket["id"])["tags"]) == {"helpline", "helpline_email", "helpline_api"}
    assert len([u for u in fake.users() if (u.get("external_id") or "").startswith("hl_")]) == 1
    audits = fake.audits(ticket["id"])
    assert {a["metadata"]["custom"].get("helpline_event") for a in audits} >= {event["id"]}


async def test_forged_old_and_replayed_webhooks_send_the_customer_nothing(
    make_daemon: Any, fake: FakeZendesk, relay: tuple[Relay, int]
) -> None:
    live, port, driver = await _start(make_daemon, fake, relay)
    event = await customer_writes(live, port)
    conversation = event["data"]["conversation_id"]
    await until(lambda: len(driver.tickets(conversation)) == 1)
    [ticket] = driver.tickets(conversation)
    await driver.agent_reply(ticket, "The real answer.")
    await until(lambda: len(relay[0].received) == 1)
    [first] = fake.deliveries()[-1:]

    count = len(fake.deliveries())
    fake.replay(first.invocation_id)  # the same bytes again: taken, but nothing new
    fake.replay(first.invocation_id, fresh_timestamp=True)
    await fake.wait_deliveries(count + 2)
    fake.send_forged(driver.hook, first.body, bad_signature=True)
    fake.send_forged(driver.hook, first.body, age=3600)
    await fake.wait_deliveries(count + 4)
    statuses = [d.status for d in fake.deliveries()]
    assert statuses[count : count + 2] == [200, 200] and statuses[count + 2 :] == [401, 401]
    await asyncio.sleep(0.3)
    assert len(relay[0].received) == 1
    outbound = [e for e in await live.stream() if e["type"] == "helpline.message.outbound.v1"]
    assert len(outbound) == 1
    _, ready, _ = await live.get("/readyz", token=None)
    assert ready["components"][f"backends.{NAME}"]["counters"]["replies_refused"] == 2


async def test_attachments_travel_both_ways(
    make_daemon: Any, fake: FakeZendesk, relay: tuple[Relay, int]
) -> None:
    from tests.integration.test_smtp import mail, send

    _, port, _ = await _start(make_daemon, fake, relay)
    raw = mail(
        "Ann <ann@example.org>",
        "support@example.com",
        "Broken",
        "See the photo",
        message_id="<att1@customer.example>",
    )
    raw.add_attachment(
        b"\x89PNG\r\n\x1a\n" + b"p" * 100, maintype="image", subtype="png", filename="photo.png"
    )
    await asyncio.to_thread(send, port, raw, ["support@example.com"])
    await until(lambda: bool(fake.tickets()))
    ticket = fake.tickets()[0]
    [comment] = fake.comments(ticket["id"])
    [att] = comment["attachments"]
    assert att["file_name"] == "photo.png"
    assert fake.attachment_content(att["id"]).startswith(b"\x89PNG")

    pdf = b"%PDF-1.4 " + bytes(range(256)) * 1600  # 400 KB: many network chunks
    fake.agent_reply(
        ticket["id"], "Here is the manual.", attachments=[("manual.pdf", "application/pdf", pdf)]
    )
    await until(lambda: len(relay[0].received) == 1)
    [mailed] = relay[0].received
    files = [(p.get_filename(), p.get_content()) for p in mailed.iter_attachments()]
    assert files == [("manual.pdf", pdf)]


async def test_wrong_credentials_degrade_the_backend_and_park_nothing(
    make_daemon: Any, fake: FakeZendesk, relay: tuple[Relay, int]
) -> None:
    driver = ZendeskDriver(fake)
    section = driver.section().replace(fake.api_token, "wrong-token")
    live, _ = await daemon_with_mail(make_daemon, relay[1], core=f"[backends.{NAME}]\n{section}\n")
    await live.post("/v1/messages", {"from": {"email": "x@example.org"}, "text": "Hello"})

    async def degraded() -> dict[str, Any]:
        _, view, _ = await live.get(f"/v1/backends/{NAME}")
        return dict(view)

    deadline = time.monotonic() + 10
    while (view := await degraded())["state"] != "degraded":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert view["authenticated"] is False and view["dead_letters"] == 0
    assert "401" in view["last_error"]
    assert view["lag_events"] >= 1
    assert fake.tickets() == []


async def test_a_contact_merge_in_helpline_merges_the_end_users(
    make_daemon: Any, fake: FakeZendesk, relay: tuple[Relay, int]
) -> None:
    live, _, _ = await _start(make_daemon, fake, relay)
    _, ann, _ = await live.post("/v1/messages", {"from": {"email": "ann@example.org"}, "text": "A"})
    _, phone, _ = await live.post("/v1/messages", {"from": {"phone": "+4930555666"}, "text": "B"})
    await until(lambda: len(fake.tickets()) == 2)
    users = {u["external_id"]: u["id"] for u in fake.users() if u.get("external_id")}
    ann_user, phone_user = users[f"hl_{ann['contact_id']}"], users[f"hl_{phone['contact_id']}"]
    both = {"email": "ann@example.org", "phone": "+4930555666"}
    status, merged, _ = await live.post("/v1/messages", {"from": both, "text": "C"}, token="crm")
    assert status == 201 and merged["contact_id"] == ann["contact_id"]
    await until(lambda: not fake.user(phone_user)["active"])
    [call] = fake.recorded("PUT", rf"^/api/v2/users/{phone_user}/merge$")
    assert orjson.loads(call.body) == {"user": {"id": ann_user}}
    phone_ticket = fake.tickets(external_id=phone["conversation_id"])[0]
    assert phone_ticket["requester_id"] == ann_user  # Zendesk moved the ticket along


async def test_with_three_backends_an_answer_in_one_reaches_the_others(
    make_daemon: Any, fake: FakeZendesk, relay: tuple[Relay, int]
) -> None:
    from tests.fakes.webhook_consumer import SECRET as HOOK_SECRET
    from tests.fakes.webhook_consumer import WebhookConsumer
    from tests.fakes.zammad import FakeZammad
    from tests.integration.test_backend_zammad import ZammadDriver

    with WebhookConsumer() as consumer, FakeZammad() as zammad:
        other = (
            f'[backends.warehouse]\ntype = "webhook"\nurl = "{consumer.url}/hook"\n'
            f'secret = "{HOOK_SECRET}"\ntypes = ["helpline.message.*"]\n'
            f"[backends.zammad]\n{ZammadDriver(zammad).section()}"
        )
        live, port, driver = await _start(make_daemon, fake, relay, extra="\n" + other)
        event = await customer_writes(live, port)
        conversation = event["data"]["conversation_id"]
        await until(lambda: len(driver.tickets(conversation)) == 1)
        [ticket] = driver.tickets(conversation)
        await driver.agent_reply(ticket, "Answered in Zendesk.")
        await until(lambda: len(relay[0].received) == 1)  # the customer got it by mail

        def answers() -> list[dict[str, Any]]:
            return [e for e in consumer.events() if e["type"] == "helpline.message.outbound.v1"]

        await until(lambda: len(answers()) == 1)
        [answer] = answers()
        assert answer["source"] == f"/backends/{NAME}"
        assert answer["data"]["text"].strip() == "Answered in Zendesk."
        assert answer["data"]["conversation_id"] == conversation
        # Zammad holds the same conversation's ticket, with the answer as an agent's
        other_desk = ZammadDriver(zammad)
        await until(lambda: len(other_desk.tickets(conversation)) == 1)
        [zammad_ticket] = other_desk.tickets(conversation)
        await until(lambda: bool(texts(other_desk.messages(zammad_ticket), "agent")))
        assert texts(other_desk.messages(zammad_ticket), "agent") == ["Answered in Zendesk."]
        assert texts(other_desk.messages(zammad_ticket), "customer") == ["It smokes"]
        await asyncio.sleep(0.3)  # and the answer is not posted back into Zendesk
        assert [s.text for s in driver.messages(ticket) if s.kind == "agent"] == [
            "Answered in Zendesk."
        ]
