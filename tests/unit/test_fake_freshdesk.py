"""The Freshdesk fake answers as backends.md §6 says Freshdesk API v2 does.

Plain aiohttp calls against the running fake: auth, the create / lookup / append flows a
backend uses, validation and duplicate answers, the rate limit, the absence of any
idempotency key, and the unsigned automation webhook (checked by an independent reading
of the doc: custom headers + Basic auth, no signature; section 10 has no Freshdesk vector).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from tests.fakes.freshdesk import FakeFreshdesk
from tests.fakes.freshdesk_hooks import Delivery
from tests.fakes.harness import CommitThenReset

KEY = "fd-test-key"
T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand (rate windows, index lag, the 30-day listing)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def basic(user: str, password: str = "X") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


Answer = tuple[int, Any, CIMultiDictProxy[str]]


async def call(
    fake: FakeFreshdesk,
    method: str,
    path: str,
    body: Any = None,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    data: Any = None,
) -> Answer:
    sent = basic(KEY) if headers is None else headers
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, fake.url + "/api/v2" + path, json=body, data=data, params=params, headers=sent
        ) as response,
    ):
        raw = await response.read()
        return response.status, orjson.loads(raw) if raw else None, response.headers


def ticket_body(cid: str = "conv_1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"email": "alice@example.com", "name": "Alice", "subject": "Help"}
    body |= {"description": "<p>first message</p>", "status": 2, "priority": 1, "source": 7}
    body |= {"tags": ["helpline"], "custom_fields": {"cf_helpline_cid": cid}}
    return body | extra


def errors(body: Any) -> list[tuple[str, str]]:
    assert body["description"] == "Validation failed"
    return [(e["field"], e["code"]) for e in body["errors"]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeFreshdesk]:
    fd = FakeFreshdesk(clock=clock, search_lag=5.0, webhook_time_scale=1e-4)
    fd.start()
    yield fd
    fd.stop()


async def test_basic_auth_with_the_api_key(fake: FakeFreshdesk) -> None:
    refused = {
        "code": "invalid_credentials",
        "message": "You have to be logged in to perform this action.",
    }
    for headers in ({}, basic("wrong-key"), {"Authorization": f"Bearer {KEY}"}):
        status, body, sent = await call(fake, "GET", "/agents/me", headers=headers)
        assert (status, body) == (401, refused)
        assert "X-RateLimit-Remaining" in sent  # refused calls count too
    status, body, _ = await call(fake, "GET", "/agents/me", headers=basic(KEY, "anything"))
    assert status == 200 and body["id"] == fake.api_agent
    assert fake.tickets() == []


async def test_create_show_and_list_by_requester(fake: FakeFreshdesk, clock: Clock) -> None:
    status, created, headers = await call(fake, "POST", "/tickets", ticket_body())
    assert status == 201 and headers["Location"] == f"/api/v2/tickets/{created['id']}"
    assert created["custom_fields"] == {"cf_helpline_cid": "conv_1"}
    assert (created["status"], created["priority"], created["source"]) == (2, 1, 7)
    assert created["description_text"] == "first message" and created["tags"] == ["helpline"]
    [contact] = fake.contacts()
    assert created["requester_id"] == contact["id"] and contact["email"] == "alice@example.com"

    path = f"/tickets/{created['id']}"
    status, shown, headers = await call(fake, "GET", path, params={"include": "requester"})
    assert status == 200 and shown["requester"]["email"] == "alice@example.com"
    assert headers["X-RateLimit-Used-CurrentRequest"] == "2"  # an include costs a credit
    assert fake.tickets_by_marker("conv_1")[0]["id"] == created["id"]

    # The same email names the same contact; the listing sees the new ticket at once.
    _, second, _ = await call(fake, "POST", "/tickets", ticket_body("conv_2"))
    assert second["requester_id"] == created["requester_id"]
    query = {"requester_id": str(contact["id"]), "order_by": "created_at", "per_page": "1"}
    status, page, headers = await call(fake, "GET", "/tickets", params=query)
    assert status == 200 and [t["id"] for t in page] == [second["id"]]
    assert page[0]["custom_fields"]["cf_helpline_cid"] == "conv_2"
    assert "description" not in page[0] and 'rel="next"' in headers["Link"]
    _, by_mail, _ = await call(fake, "GET", "/tickets", params={"email": "ALICE@example.com"})
    assert len(by_mail) == 2
    status, body, _ = await call(fake, "GET", "/tickets", params={"email": "nobody@example.com"})
    assert status == 400 and errors(body) == [("email", "invalid_value")]
    status, body, _ = await call(fake, "GET", "/tickets", params={"unique_external_id": "x"})
    assert status == 400 and errors(body) == [("unique_external_id", "invalid_field")]
    status, body, _ = await call(fake, "GET", "/tickets", params={"per_page": "101"})
    assert status == 400 and errors(body) == [("per_page", "invalid_value")]
    clock.now += 31 * 86400  # by default the listing holds the last 30 days only
    _, old, _ = await call(fake, "GET", "/tickets", params={"requester_id": str(contact["id"])})
    assert old == []


async def test_search_lags_behind_the_listing(fake: FakeFreshdesk, clock: Clock) -> None:
    _, created, _ = await call(fake, "POST", "/tickets", ticket_body("conv_9"))
    query = {"query": "\"cf_helpline_cid:'conv_9'\""}
    status, found, _ = await call(fake, "GET", "/search/tickets", params=query)
    assert (status, found) == (200, {"results": [], "total": 0})
    clock.now += 5
    _, found, _ = await call(fake, "GET", "/search/tickets", params=query)
    assert [t["id"] for t in found["results"]] == [created["id"]] and found["total"] == 1
    either = {"query": "\"(status:3 OR status:2) AND tag:'helpline'\""}
    _, found, _ = await call(fake, "GET", "/search/tickets", params=either)
    assert found["total"] == 1
    for bad in ("cf_helpline_cid:'conv_9'", '"' + "status:2 OR " * 60 + 'status:2"', '"nope:1"'):
        status, body, _ = await call(fake, "GET", "/search/tickets", params={"query": bad})
        assert status == 400 and errors(body) == [("query", "invalid_value")]
    status, body, _ = await call(fake, "GET", "/search/tickets", params={**query, "page": "11"})
    assert status == 400 and errors(body) == [("page", "invalid_value")]


async def test_ticket_validation_answers(fake: FakeFreshdesk) -> None:
    cases: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
        ({"subject": "s", "description": "d"}, [("requester_id", "missing_field")]),
        (ticket_body(status=9), [("status", "invalid_value")]),
        (ticket_body(priority="high"), [("priority", "datatype_mismatch")]),
        (ticket_body(source=6), [("source", "invalid_value")]),
        (ticket_body(custom_fields={"cf_other": "x"}), [("cf_other", "invalid_field")]),
        (
            ticket_body(custom_fields={"cf_helpline_cid": 5}),
            [("cf_helpline_cid", "datatype_mismatch")],
        ),
        (ticket_body(colour="red"), [("colour", "invalid_field")]),
        (ticket_body(email="not-an-email"), [("email", "invalid_value")]),
        ({"phone": "+4930123", "subject": "s", "description": "d"}, [("name", "missing_field")]),
        ({"email": "a@example.com", "description": "d"}, [("subject", "missing_field")]),
        (ticket_body(requester_id=999), [("requester_id", "invalid_value")]),
    ]
    for body, expected in cases:
        status, answer, _ = await call(fake, "POST", "/tickets", body)
        assert status == 400, body
        assert errors(answer) == expected, body
    assert fake.tickets() == [] and fake.contacts() == []

    status, body, _ = await call(
        fake,
        "POST",
        "/tickets",
        data=b"{oops",
        headers={**basic(KEY), "Content-Type": "application/json"},
    )
    assert (status, body["code"]) == (400, "invalid_json")
    status, body, _ = await call(
        fake, "POST", "/tickets", data=b"x", headers={**basic(KEY), "Content-Type": "text/plain"}
    )
    assert (status, body["code"]) == (415, "invalid_content_type")
    status, body, _ = await call(fake, "GET", "/tickets/424242")
    assert (status, body) == (404, None)

    phone_only = {"phone": "+4930123", "name": "Bob", "subject": "s", "description": "d"}
    status, created, _ = await call(fake, "POST", "/tickets", phone_only)
    assert status == 201 and fake.contact(created["requester_id"])["phone"] == "+4930123"  # type: ignore[index]


async def test_required_custom_field_and_unique_external_id(clock: Clock) -> None:
    with FakeFreshdesk(clock=clock, required_fields=("subject", "cf_helpline_cid")) as fake:
        assert isinstance(fake, FakeFreshdesk)
        body = ticket_body(custom_fields={})
        status, answer, _ = await call(fake, "POST", "/tickets", body)
        assert status == 400 and errors(answer) == [("cf_helpline_cid", "missing_field")]
        _, contact, _ = await call(
            fake, "POST", "/contacts", {"name": "Carol", "unique_external_id": "hl_c1"}
        )
        body = {"unique_external_id": "hl_c1", "subject": "s", "description": "d"}
        body["custom_fields"] = {"cf_helpline_cid": "c"}
        status, ticket, _ = await call(fake, "POST", "/tickets", body)
        assert status == 201 and ticket["requester_id"] == contact["id"]


async def test_conversations_notes_and_replies(fake: FakeFreshdesk) -> None:
    _, ticket, _ = await call(fake, "POST", "/tickets", ticket_body())
    tid, customer = ticket["id"], ticket["requester_id"]
    follow_up = {"body": "<p>more</p>", "private": False, "incoming": True, "user_id": customer}
    status, note, _ = await call(fake, "POST", f"/tickets/{tid}/notes", follow_up)
    assert status == 201
    assert (note["incoming"], note["private"], note["user_id"], note["source"]) == (
        True,
        False,
        customer,
        2,
    )
    _, internal, _ = await call(fake, "POST", f"/tickets/{tid}/notes", {"body": "psst"})
    assert internal["private"] is True and internal["user_id"] == fake.api_agent
    answer = {"body": "<p>hello</p>", "user_id": fake.human_agent}
    status, reply, _ = await call(fake, "POST", f"/tickets/{tid}/reply", answer)
    assert status == 201 and reply["to_emails"] == ["alice@example.com"]
    assert (reply["private"], reply["incoming"], reply["source"]) == (False, False, 0)

    status, listed, _ = await call(fake, "GET", f"/tickets/{tid}/conversations")
    assert [c["id"] for c in listed] == [note["id"], internal["id"], reply["id"]]
    assert set(listed[0]) >= {"id", "body", "body_text", "incoming", "private", "user_id"}
    authors = [c["author"] for c in fake.conversations(tid)]
    assert [a["agent"] for a in authors] == [False, True, True]

    bad = [
        (f"/tickets/{tid}/notes", {"body": "x", "user_id": 1}, ("user_id", "invalid_value")),
        (f"/tickets/{tid}/notes", {"private": False}, ("body", "missing_field")),
        (f"/tickets/{tid}/notes", {"body": "x", "private": "no"}, ("private", "datatype_mismatch")),
        (f"/tickets/{tid}/reply", {"body": "x", "user_id": customer}, ("user_id", "invalid_value")),
    ]
    for path, body, expected in bad:
        status, answer, _ = await call(fake, "POST", path, body)
        assert status == 400 and errors(answer) == [expected], body
    status, _, _ = await call(fake, "POST", "/tickets/999/notes", {"body": "x"})
    assert status == 404
    assert len(fake.conversations(tid)) == 3


async def test_attachments_go_as_multipart(fake: FakeFreshdesk) -> None:
    form = aiohttp.FormData()
    for key, value in (("email", "dora@example.com"), ("subject", "Pic"), ("description", "d")):
        form.add_field(key, value)
    form.add_field("status", "2")
    form.add_field("tags[]", "helpline")
    form.add_field("custom_fields[cf_helpline_cid]", "20240101")  # a text field stays text
    form.add_field("attachments[]", b"\x89PNG...", filename="a.png", content_type="image/png")
    status, ticket, _ = await call(fake, "POST", "/tickets", data=form)
    assert status == 201 and ticket["status"] == 2 and ticket["tags"] == ["helpline"]
    assert ticket["custom_fields"]["cf_helpline_cid"] == "20240101"
    [attachment] = ticket["attachments"]
    assert (attachment["name"], attachment["size"]) == ("a.png", 7)

    note = aiohttp.FormData()
    note.add_field("body", "see file")
    note.add_field("private", "false")
    note.add_field("attachments[]", b"hello", filename="n.txt", content_type="text/plain")
    status, row, _ = await call(fake, "POST", f"/tickets/{ticket['id']}/notes", data=note)
    assert status == 201 and row["private"] is False
    async with (
        aiohttp.ClientSession() as http,
        http.get(row["attachments"][0]["attachment_url"]) as got,
    ):
        assert await got.read() == b"hello"
    assert fake.conversations(ticket["id"])[0]["attachments"][0]["data"] == b"hello"


async def test_contacts_duplicates_search_and_merge(fake: FakeFreshdesk, clock: Clock) -> None:
    one = {"name": "Eve", "email": "eve@example.com", "unique_external_id": "hl_1"}
    status, eve, _ = await call(fake, "POST", "/contacts", one)
    assert status == 201 and eve["unique_external_id"] == "hl_1"
    for dup in (
        {"name": "E", "unique_external_id": "hl_1"},
        {"name": "E", "email": "EVE@example.com"},
    ):
        status, body, _ = await call(fake, "POST", "/contacts", dup)
        assert status == 409 and errors(body)[0][1] == "duplicate_value"
        assert body["errors"][0]["additional_info"] == {"user_id": eve["id"]}
    for bad, expected in (
        ({"email": "x@example.com"}, ("name", "missing_field")),
        ({"name": "N"}, ("email", "missing_field")),
    ):
        status, body, _ = await call(fake, "POST", "/contacts", bad)
        assert status == 400 and errors(body) == [expected]

    _, listed, _ = await call(fake, "GET", "/contacts", params={"email": "eve@example.com"})
    assert [c["id"] for c in listed] == [eve["id"]]
    clock.now += 5
    query = {"query": "\"email:'eve@example.com'\""}
    _, found, _ = await call(fake, "GET", "/search/contacts", params=query)
    assert found["total"] == 1

    _, other, _ = await call(
        fake, "POST", "/contacts", {"name": "Eve 2", "email": "e2@example.com"}
    )
    _, ticket, _ = await call(fake, "POST", "/tickets", ticket_body(email="e2@example.com"))
    merge = {"primary_contact_id": eve["id"], "secondary_contact_ids": [other["id"]]}
    status, body, _ = await call(fake, "POST", "/contacts/merge", merge)
    assert (status, body) == (204, None)
    status, _, _ = await call(fake, "GET", f"/contacts/{other['id']}")
    assert status == 404
    assert fake.ticket(ticket["id"])["requester_id"] == eve["id"]  # type: ignore[index]
    assert fake.contact(eve["id"])["other_emails"] == ["e2@example.com"]  # type: ignore[index]
    assert fake.contact_merges == {other["id"]: eve["id"]}


async def test_update_status_and_merge_tickets(clock: Clock) -> None:
    with FakeFreshdesk(clock=clock, custom_statuses=(6,)) as fake:
        assert isinstance(fake, FakeFreshdesk)
        _, a, _ = await call(fake, "POST", "/tickets", ticket_body("a"))
        _, b, _ = await call(fake, "POST", "/tickets", ticket_body("b"))
        for code in (4, 6):
            status, body, _ = await call(fake, "PUT", f"/tickets/{a['id']}", {"status": code})
            assert status == 200 and body["status"] == code
        status, body, _ = await call(fake, "PUT", f"/tickets/{a['id']}", {"status": 7})
        assert status == 400 and errors(body) == [("status", "invalid_value")]
        merge = {"primary_id": a["id"], "ticket_ids": [b["id"]]}
        status, _, _ = await call(fake, "PUT", "/tickets/merge", merge)
        assert status == 204 and fake.ticket(b["id"])["status"] == 5  # type: ignore[index]
        assert fake.ticket_merges == {b["id"]: a["id"]}


async def test_rate_limit_headers_and_429(clock: Clock) -> None:
    with FakeFreshdesk(clock=clock, rate_limit=3, rate_window=60.0) as fake:
        assert isinstance(fake, FakeFreshdesk)
        clock.now = T0 - T0 % 60 + 15  # 45 s left in this window
        remaining = []
        refused: dict[str, str] = {}
        for headers in (None, refused, None):  # the refused call counts as well
            status, _, sent = await call(fake, "GET", "/tickets", headers=headers)
            remaining.append(sent["X-RateLimit-Remaining"])
            assert sent["X-RateLimit-Total"] == "3"
        assert remaining == ["2", "1", "0"]
        status, body, sent = await call(fake, "POST", "/tickets", ticket_body())
        assert status == 429 and sent["Retry-After"] == "45" and body["code"]
        assert fake.tickets() == []
        clock.now += 45
        status, _, _ = await call(fake, "POST", "/tickets", ticket_body())
        assert status == 201

        fake.throttle(2, retry_after=7)
        for _ in range(2):
            status, _, sent = await call(fake, "POST", "/tickets", ticket_body())
            assert status == 429 and sent["Retry-After"] == "7"
        fake.throttle(1, retry_after=None)
        status, _, sent = await call(fake, "GET", "/tickets")
        assert status == 429 and "Retry-After" not in sent
        assert len(fake.tickets()) == 1


async def test_no_idempotency_key_so_lookup_adopts(fake: FakeFreshdesk) -> None:
    """Freshdesk has no idempotency handle: a re-sent create is a second ticket (§6.5)."""
    fake.arm(CommitThenReset(), method="POST", path="^/api/v2/tickets$")
    with pytest.raises(aiohttp.ClientError):
        await call(fake, "POST", "/tickets", ticket_body("conv_x"))
    [contact] = fake.contacts()
    _, listed, _ = await call(fake, "GET", "/tickets", params={"requester_id": str(contact["id"])})
    assert [t["custom_fields"]["cf_helpline_cid"] for t in listed] == ["conv_x"]  # adopt it
    headers = {**basic(KEY), "Idempotency-Key": "conv_x"}
    await call(fake, "POST", "/tickets", ticket_body("conv_x"), headers=headers)
    assert len(fake.tickets_by_marker("conv_x")) == 2  # the header changes nothing


class Receiver:
    """A webhook endpoint in the test's loop, answering from a script (default 200)."""

    def __init__(self, script: list[int | float] | None = None) -> None:
        self.script = list(script or [])
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), await request.read()))
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, float):  # answer late
            await asyncio.sleep(step)
            step = 200
        return web.Response(status=int(step))

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def settled(count: int) -> Any:
    return lambda ds: (
        len(ds) >= count and all(d.state in ("delivered", "failed", "dropped") for d in ds)
    )


async def test_webhook_is_unsigned_with_admin_headers(fake: FakeFreshdesk) -> None:
    _, ticket, _ = await call(fake, "POST", "/tickets", ticket_body("conv_w"))
    async with Receiver() as receiver:
        fake.set_webhook(
            receiver.url,
            headers={"X-Helpline-Token": "s3cret"},
            basic_auth=("helpline", "pw"),
        )
        reply = fake.agent_reply(ticket["id"], '<p>Say "hi"</p>')
        [delivery] = await fake.wait_deliveries(settled(1))
        headers, raw = receiver.seen[0]
        # Independent reading of §6.8: the admin's header, Basic auth, JSON, nothing signed.
        expected_auth = "Basic " + base64.b64encode(b"helpline:pw").decode()
        assert headers["X-Helpline-Token"] == "s3cret" and headers["Authorization"] == expected_auth
        assert headers["Content-Type"].startswith("application/json")
        assert not [h for h in headers if "signature" in h.lower() or "delivery" in h.lower()]
        payload = json.loads(raw)["freshdesk_webhook"]
        assert (
            payload["ticket_id"] == ticket["id"] and payload["ticket_cf_helpline_cid"] == "conv_w"
        )
        assert payload["ticket_latest_public_comment"] == 'Ada Agent : <p>Say "hi"</p>'
        assert payload["ticket_contact_email"] == "alice@example.com"
        assert delivery.conversation_id == reply["id"] and delivery.state == "delivered"

        # A replay is byte for byte the same call; forged ones lack or change the secret.
        again = await fake.replay(delivery.number)
        assert receiver.seen[1][1] == raw and again.replay_of == delivery.number
        assert receiver.seen[1][0]["X-Helpline-Token"] == "s3cret"
        await fake.forge(delivery.number, headers={"X-Helpline-Token": "wrong"})
        await fake.forge(delivery.number, drop=("Authorization",))
        assert receiver.seen[2][0]["X-Helpline-Token"] == "wrong"
        assert "Authorization" not in receiver.seen[3][0]


async def test_webhook_rule_scope_and_template(fake: FakeFreshdesk) -> None:
    _, marked, _ = await call(fake, "POST", "/tickets", ticket_body("conv_t"))
    _, unmarked, _ = await call(fake, "POST", "/tickets", ticket_body(custom_fields={}))
    template = (
        '{"ticket": {{ticket.id}}, "cid": "{{ticket.cf_helpline_cid}}",'
        ' "text": "{{ticket.latest_public_comment}}"}'
    )
    async with Receiver() as receiver:
        fake.set_webhook(receiver.url, template=template)
        fake.agent_reply(unmarked["id"], "not for helpline")  # condition: marker not empty
        fake.agent_reply(marked["id"], "internal", public=False)  # a note, not a reply
        # helpline's own API reply fires the rule too (§2.4: filter on author).
        await call(fake, "POST", f"/tickets/{marked['id']}/reply", {"body": 'a "quoted"\nline'})
        [delivery] = await fake.wait_deliveries(settled(1))
        assert json.loads(receiver.seen[0][1]) == {
            "ticket": marked["id"],
            "cid": "conv_t",
            "text": 'Helpline API : a "quoted"\nline',
        }
        assert delivery.ticket_id == marked["id"]


async def test_webhook_retries_then_failure_email(clock: Clock) -> None:
    with FakeFreshdesk(clock=clock, webhook_time_scale=1e-4, webhook_timeout=0.2) as fake:
        assert isinstance(fake, FakeFreshdesk)
        _, ticket, _ = await call(fake, "POST", "/tickets", ticket_body())
        async with Receiver([500, 0.5, 503]) as receiver:  # 500, too slow, 503, then 200
            fake.set_webhook(receiver.url)
            loop = asyncio.get_running_loop()
            fake.agent_reply(ticket["id"], "one")
            [done] = await fake.wait_deliveries(settled(1))
            assert [a.status for a in done.attempts] == [500, None, 503, 200]
            assert done.attempts[1].error == "timeout" and done.state == "delivered"
            assert len({body for _, body in receiver.seen}) == 1  # the same body each time
            started = loop.time()
            receiver.script = [500] * 4
            fake.agent_reply(ticket["id"], "two")
            ds = await fake.wait_deliveries(settled(2))
            # 5 + 30 + 60 min, scaled by 1e-4 → at least 0.57 s between first and last.
            assert loop.time() - started >= 0.57
            assert [a.status for a in ds[1].attempts] == [500] * 4 and ds[1].state == "failed"
            assert fake.failure_emails() == [
                {"delivery": 2, "url": receiver.url, "reason": "HTTP 500"}
            ]


async def test_webhook_budget_defers_then_drops(clock: Clock) -> None:
    with FakeFreshdesk(clock=clock, webhook_time_scale=1e-5, webhook_budget=1) as fake:
        assert isinstance(fake, FakeFreshdesk)
        _, ticket, _ = await call(fake, "POST", "/tickets", ticket_body())
        async with Receiver() as receiver:
            fake.set_webhook(receiver.url)
            fake.agent_reply(ticket["id"], "one")
            fake.agent_reply(ticket["id"], "two")
            ds: list[Delivery] = await fake.wait_deliveries(settled(2))
            assert [d.state for d in ds] == ["delivered", "delivered"]  # the 2nd, an hour later
            fake.hooks.budget = 0  # the hour's budget is gone for good
            fake.agent_reply(ticket["id"], "three")
            ds = await fake.wait_deliveries(settled(3), timeout=5.0)
            assert ds[2].state == "dropped" and ds[2].attempts == [] and len(receiver.seen) == 2
