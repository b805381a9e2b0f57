"""The fake Zammad answers as reference §4 says Zammad does; its webhook is signed as documented."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.harness import CommitThenReset
from tests.fakes.zammad import FakeZammad
from tests.fakes.zammad_hooks import sign

TOKEN = "zammad-api-token"
CID = "conv_01J0000000000000000000000"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def call(
    fake: FakeZammad,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Token token={token}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.request(
            method, fake.url + "/api/v1" + path, json=body, headers=sent, params=params
        ) as response,
    ):
        raw = await response.read()
        try:
            data: Any = json.loads(raw)
        except ValueError:
            data = raw.decode() if response.content_type.startswith("text/") else raw
        return response.status, data, dict(response.headers)


def new_ticket(cid: str = CID, **extra: Any) -> dict[str, Any]:
    return {
        "title": "Chat with Alice",
        "group": "Support",
        "customer_id": "guess:alice@example.com",
        "helpline_cid": cid,
        "article": {
            "body": "Hello, my order is late",
            "content_type": "text/plain",
            "type": "web",
            "sender": "Customer",
            "internal": False,
            "message_id": "<evt_1@helpline>",
        },
        **extra,
    }


@contextmanager
def running(**flags: Any) -> Iterator[FakeZammad]:
    """A started FakeZammad, typed as such (the harness's `__enter__` returns the base class)."""
    fake = FakeZammad(**flags)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
async def fake() -> AsyncIterator[FakeZammad]:
    with running(clock=Clock()) as started:
        yield started


async def test_auth_is_refused_and_accepted_as_zammad_does(fake: FakeZammad) -> None:
    status, body, headers = await call(fake, "GET", "/users/me", token=None)
    assert status == 403 and body["error"] == "Authentication required"
    assert headers["X-Failure"] == "Authentication required"
    status, body, headers = await call(fake, "GET", "/users/me", token="wrong")
    assert (status, body) == (
        401,
        {"error": "Can't find User for Token", "error_human": "Can't find User for Token"},
    )
    assert headers["X-Failure"] == "Can't find User for Token"
    status, me, _ = await call(fake, "GET", "/users/me")
    assert status == 200 and me["id"] == fake.api_user_id and me["email"] == "helpline@example.com"

    fake.expire_token(TOKEN)
    status, body, _ = await call(fake, "GET", "/users/me")
    assert status == 401 and body["error"] == "Not authorized (token expired)!"
    with running(api_token_access=False) as off:
        status, body, headers = await call(off, "GET", "/users/me")
        assert status == 403 and headers["X-Failure"] == "API token access disabled!"


async def test_from_and_x_on_behalf_of(fake: FakeZammad) -> None:
    alice = fake.add_user(email="alice@example.com", firstname="Alice")
    for header in ("From", "X-On-Behalf-Of"):
        status, me, _ = await call(fake, "GET", "/users/me", headers={header: "ALICE@example.com"})
        assert status == 200 and me["id"] == alice
    status, me, _ = await call(fake, "GET", "/users/me", headers={"From": str(alice)})
    assert me["id"] == alice
    both = {"From": str(fake.agent_id), "X-On-Behalf-Of": str(alice)}
    assert (await call(fake, "GET", "/users/me", headers=both))[1]["id"] == fake.agent_id
    status, body, headers = await call(fake, "GET", "/users/me", headers={"From": "nobody@x.org"})
    assert status == 403 and body["error"] == "No such user 'nobody@x.org'"
    assert headers["X-Failure"] == "No such user 'nobody@x.org'"

    fake.add_user(email="agent2@example.com", roles=("Agent",), token="agent-only")
    status, body, _ = await call(
        fake, "GET", "/users/me", token="agent-only", headers={"From": "1"}
    )
    assert status == 403
    assert body["error"] == "Current user has no permission to use 'From'/'X-On-Behalf-Of'!"


async def test_users_create_search_update(fake: FakeZammad) -> None:
    user = {"firstname": "Alice", "lastname": "Liddell", "email": "Alice@Example.com",
            "phone": "+49301234567", "roles": ["Customer"]}  # fmt: skip
    status, alice, _ = await call(fake, "POST", "/users", user)
    assert status == 201 and alice["email"] == "alice@example.com" and alice["role_ids"] == [3]
    status, body, _ = await call(fake, "POST", "/users", {"email": "alice@example.com"})
    assert status == 422
    assert body["error"] == "Email address 'alice@example.com' is already used for other user."
    assert body["error_human"] == body["error"]

    _, found, _ = await call(fake, "GET", "/users/search", params={"query": "lice"})
    assert [u["id"] for u in found] == [alice["id"]]  # substring, not exact
    _, found, _ = await call(fake, "GET", "/users/search", params={"query": "1234567"})
    assert found == []  # without Elasticsearch the phone is not searched
    _, found, _ = await call(fake, "GET", "/users/search", params={"query": "example.com"})
    assert len(found) > 1  # so the caller must filter exactly

    status, bob, _ = await call(fake, "POST", "/users", {"firstname": "Bob", "email": "b@x.org"})
    status, body, _ = await call(fake, "PUT", f"/users/{bob['id']}", {"email": "ALICE@example.com"})
    assert status == 422 and "already used" in body["error"]
    status, bob, _ = await call(fake, "PUT", f"/users/{bob['id']}", {"phone": "+331"})
    assert status == 200 and bob["phone"] == "+331"
    status, body, _ = await call(fake, "PUT", "/users/999", {"phone": "1"})
    assert (status, body["error"]) == (404, "Couldn't find User with 'id'=999")

    fake.add_user(email="ag@example.com", roles=("Agent",), token="agent-only")
    new = {"email": "c@x.org", "roles": ["Admin"]}
    status, carol, _ = await call(fake, "POST", "/users", new, token="agent-only")
    assert status == 201 and carol["role_ids"] == [3]  # agents cannot set roles

    with running(elasticsearch=True) as es:
        es.add_user(email="d@x.org", phone="+49301234567")
        _, found, _ = await call(es, "GET", "/users/search", params={"query": "1234567"})
        assert len(found) == 1


async def test_ticket_create_with_first_article_and_marker(fake: FakeZammad) -> None:
    status, ticket, _ = await call(fake, "POST", "/tickets", new_ticket())
    assert status == 201 and ticket["helpline_cid"] == CID and ticket["state_id"] == 1
    assert ticket["number"] != str(ticket["id"]) and len(ticket["article_ids"]) == 1
    alice = fake.user_by_email("alice@example.com")
    assert alice is not None and ticket["customer_id"] == alice["id"]
    assert [t["id"] for t in fake.tickets_with(CID)] == [ticket["id"]]

    _, articles, _ = await call(fake, "GET", f"/ticket_articles/by_ticket/{ticket['id']}")
    (first,) = articles
    assert (first["sender"], first["type"], first["internal"]) == ("Customer", "web", False)
    assert first["message_id"] == "<evt_1@helpline>" and first["origin_by_id"] == alice["id"]
    assert first["created_by_id"] == fake.api_user_id

    # the same guess: finds the customer again; no native idempotency: a second ticket appears
    status, again, _ = await call(fake, "POST", "/tickets", new_ticket())
    assert status == 201 and again["customer_id"] == alice["id"] and again["id"] != ticket["id"]
    assert len(fake.tickets_with(CID)) == 2


async def test_ticket_create_validation(fake: FakeZammad) -> None:
    status, body, _ = await call(fake, "POST", "/tickets", new_ticket(customer_id="guess:nope"))
    assert (status, body) == (422, {"error": "Invalid email 'nope' of customer"})
    bad = new_ticket()
    del bad["article"]["body"]
    status, body, _ = await call(fake, "POST", "/tickets", bad)
    assert status == 422 and body["error"] == "Need at least an 'article body' field."
    status, body, _ = await call(fake, "POST", "/tickets", new_ticket(title=""))
    assert status == 422 and body["error_human"] == "Attribute 'title' required!"
    assert fake.tickets() == [] and fake.user_by_email("alice@example.com") is None  # rolled back
    status, body, _ = await call(fake, "POST", "/tickets", new_ticket(group="Nope"))
    assert status == 422 and body["error"] == "No lookup value found for 'group': \"Nope\""


async def test_unknown_attribute_is_dropped_and_its_condition_fails() -> None:
    with running(ticket_attributes=()) as bare:
        status, ticket, _ = await call(bare, "POST", "/tickets", new_ticket())
        assert status == 201 and "helpline_cid" not in ticket
        cond = {"condition": {"ticket.helpline_cid": {"operator": "is", "value": CID}}}
        status, body, _ = await call(bare, "POST", "/tickets/search", cond)
        assert status == 422 and "column tickets.helpline_cid does not exist" in body["error"]


async def test_articles_attachments_state_and_404(fake: FakeZammad) -> None:
    _, ticket, _ = await call(fake, "POST", "/tickets", new_ticket())
    tid = ticket["id"]
    data = b"\x89PNG not really"
    article = {
        "ticket_id": tid, "body": "photo", "type": "web", "sender": "Customer",
        "internal": False, "message_id": "<evt_2@helpline>",
        "attachments": [{"filename": "a.png", "mime-type": "image/png",
                         "data": base64.b64encode(data).decode()}],
    }  # fmt: skip
    status, art, _ = await call(fake, "POST", "/ticket_articles", article)
    assert status == 201 and art["attachments"][0]["filename"] == "a.png"
    assert art["attachments"][0]["size"] == str(len(data))
    stored = fake.articles(tid)[-1]
    assert stored["attachments"][0]["data"] == data and stored["sender"] == "Customer"
    link = f"/ticket_attachment/{tid}/{art['id']}/{art['attachments'][0]['id']}"
    status, got, headers = await call(fake, "GET", link)
    assert (status, got, headers["Content-Type"]) == (200, data, "image/png")
    assert (await call(fake, "GET", link, token=None))[0] == 403

    article["attachments"][0]["data"] = "***"
    status, body, _ = await call(fake, "POST", "/ticket_articles", article)
    assert (status, body["error"]) == (422, "Invalid base64 for attachment with index '0'")
    del article["attachments"][0]["mime-type"]
    status, body, _ = await call(fake, "POST", "/ticket_articles", article)
    assert body["error"] == "Attachment needs 'mime-type' param for attachment with index '0'"
    assert len(fake.articles(tid)) == 2

    status, closed, _ = await call(fake, "PUT", f"/tickets/{tid}", {"state": "closed"})
    assert status == 200 and closed["state_id"] == 4
    _, shown, _ = await call(fake, "GET", f"/tickets/{tid}", params={"expand": "true"})
    assert shown["state"] == "closed" and shown["group"] == "Support"
    status, body, _ = await call(fake, "GET", "/tickets/999")
    missing = "Couldn't find Ticket with 'id'=999"
    assert (status, body) == (404, {"error": missing, "error_human": missing})
    status, body, _ = await call(fake, "POST", "/ticket_articles", {"ticket_id": 999, "body": "x"})
    assert status == 404


async def test_a_customer_acting_through_from_is_forced_to_customer_articles(
    fake: FakeZammad,
) -> None:
    _, ticket, _ = await call(fake, "POST", "/tickets", new_ticket())
    alice = {"From": "alice@example.com"}
    note = {"ticket_id": ticket["id"], "body": "psst", "type": "email", "sender": "Agent",
            "internal": True, "origin_by_id": fake.agent_id}  # fmt: skip
    status, art, _ = await call(fake, "POST", "/ticket_articles", note, headers=alice)
    assert status == 201
    assert (art["sender"], art["type"], art["internal"], art["origin_by_id"]) == (
        "Customer", "note", False, None,
    )  # fmt: skip
    assert art["created_by_id"] == ticket["customer_id"]
    _, other, _ = await call(fake, "POST", "/tickets", new_ticket(customer_id="guess:b@x.org"))
    status, body, _ = await call(fake, "GET", f"/tickets/{other['id']}", headers=alice)
    assert (status, body["error"]) == (403, "Not authorized")


async def test_search_by_condition_is_immediate_and_query_lags(fake: FakeZammad) -> None:
    clock = fake.clock
    assert isinstance(clock, Clock)
    _, ticket, _ = await call(fake, "POST", "/tickets", new_ticket())
    await call(fake, "POST", "/tickets", new_ticket("conv_other"))
    cond = {"condition": {"ticket.helpline_cid": {"operator": "is", "value": CID}}, "limit": 5}
    status, found, _ = await call(fake, "POST", "/tickets/search", cond)
    assert status == 200 and found["tickets"] == [ticket["id"]] and found["tickets_count"] == 1
    assert found["assets"]["Ticket"][str(ticket["id"])]["helpline_cid"] == CID

    by_msg = {"condition": {"article.message_id": {"operator": "is", "value": "<evt_1@helpline>"}}}
    _, found, _ = await call(fake, "POST", "/tickets/search", by_msg)
    assert len(found["tickets"]) == 2  # both first articles carry that message id
    nested = {"condition": {"operator": "AND", "conditions": [
        {"name": "ticket.helpline_cid", "operator": "is", "value": CID},
        {"name": "article.message_id", "operator": "is", "value": ["<evt_1@helpline>"]},
    ]}}  # fmt: skip
    assert (await call(fake, "POST", "/tickets/search", nested))[1]["tickets"] == [ticket["id"]]
    query = {"condition[ticket.helpline_cid][operator]": "is",
             "condition[ticket.helpline_cid][value]": CID}  # fmt: skip
    _, found, _ = await call(fake, "GET", "/tickets/search", params=query)
    assert found["tickets"] == [ticket["id"]]

    plain = {"query": f"helpline_cid:{CID}"}
    assert (await call(fake, "GET", "/tickets/search", params=plain))[1]["tickets"] == []
    clock.now += fake.search_index_lag + 0.1
    assert (await call(fake, "GET", "/tickets/search", params=plain))[1]["tickets"] == [
        ticket["id"]
    ]
    _, found, _ = await call(fake, "GET", "/tickets/search", params={"query": "alice"})
    assert len(found["tickets"]) == 2  # title substring


async def test_lookup_after_an_ambiguous_create_finds_the_committed_ticket(
    fake: FakeZammad,
) -> None:
    fake.arm(CommitThenReset(), method="POST", path="^/api/v1/tickets$")
    with pytest.raises(aiohttp.ClientError):
        await call(fake, "POST", "/tickets", new_ticket())
    cond = {"condition": {"ticket.helpline_cid": {"operator": "is", "value": CID}}}
    _, found, _ = await call(fake, "POST", "/tickets/search", cond)
    assert len(found["tickets"]) == 1


async def test_merge_answers_200_even_when_it_fails(fake: FakeZammad) -> None:
    _, src, _ = await call(fake, "POST", "/tickets", new_ticket())
    _, dst, _ = await call(fake, "POST", "/tickets", new_ticket("conv_b"))
    status, body, _ = await call(fake, "PUT", f"/ticket_merge/{src['id']}/{dst['id']}")
    assert status == 200 and body["result"] == "failed"  # target is by NUMBER, not id
    assert body["message"] == "The target ticket number could not be found."
    status, body, _ = await call(fake, "PUT", f"/ticket_merge/999/{dst['number']}")
    assert (status, body["result"]) == (200, "failed")
    status, body, _ = await call(fake, "PUT", f"/ticket_merge/{src['id']}/{dst['number']}")
    assert status == 200 and body["result"] == "success"
    assert body["source_ticket"]["state_id"] == 5 and fake.ticket(src["id"])["state"] == "merged"
    assert len(fake.articles(dst["id"])) == 2


async def test_throttle_answers_429(fake: FakeZammad) -> None:
    fake.throttle(2, retry_after=3)
    status, body, headers = await call(fake, "GET", "/users/me")
    assert (status, body, headers["Retry-After"]) == (429, "Retry later\n", "3")
    assert (await call(fake, "GET", "/users/me"))[0] == 429
    assert (await call(fake, "GET", "/users/me"))[0] == 200


def test_signature_test_vector() -> None:
    """§10: token `zammad-test-token`, body `{"ticket":{"id":1}}`."""
    expected = "sha1=2111d2e4194bbdd4ae27f76bb5210b2f10b52498"
    assert sign("zammad-test-token", b'{"ticket":{"id":1}}') == expected


class Receiver:
    """helpline's side, scripted: answers `codes` in turn, then 200; records every request."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = codes
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.arrivals: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        self.arrivals.append(time.monotonic())
        return web.Response(status=self.codes.pop(0) if self.codes else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    recv = Receiver([])
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield recv, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


def verify(token: str, headers: dict[str, str], body: bytes) -> bool:
    """Independent of the fake: HMAC-SHA1 over the raw bytes, hex, `sha1=` prefix."""
    mac = hmac.new(token.encode(), body, hashlib.sha1).hexdigest()
    return hmac.compare_digest(headers.get("X-Hub-Signature", ""), "sha1=" + mac)


async def test_agent_reply_webhook_signed_and_retried(
    fake: FakeZammad, receiver: tuple[Receiver, str]
) -> None:
    recv, url = receiver
    recv.codes = [500, 502]
    fake.set_webhook(url, token="s3cret", trigger="helpline")
    _, ticket, _ = await call(fake, "POST", "/tickets", new_ticket())
    png = ("r.png", "image/png", b"img")
    art = fake.agent_reply(ticket["id"], "We <ship> today & soon", attachments=[png])
    done = await fake.wait_for_deliveries(1, ok=True)
    attempts = fake.deliveries()
    assert [d.status for d in attempts] == [500, 502, 200] and [d.attempt for d in attempts] == [
        1,
        2,
        3,
    ]
    assert len({d.delivery_id for d in attempts}) == 1 and len(recv.got) == 3

    headers, body = recv.got[-1]
    assert verify("s3cret", headers, body) and not verify("other", headers, body)
    assert (
        headers["User-Agent"] == "Zammad User Agent" and headers["X-Zammad-Trigger"] == "helpline"
    )
    assert headers["X-Zammad-Delivery"] == done[0].delivery_id
    assert headers["Content-Type"].startswith("application/json")
    assert b"\\u003cship\\u003e" in body  # Rails escapes <, >, & in JSON
    payload = json.loads(body)
    assert set(payload) == {"ticket", "article"}
    assert payload["ticket"]["helpline_cid"] == CID and payload["ticket"]["customer"]["email"]
    assert payload["article"]["id"] == art["id"] and payload["article"]["sender"] == "Agent"
    assert payload["article"]["created_by"]["id"] == fake.agent_id
    assert payload["article"]["internal"] is False
    assert payload["article"]["attachments"][0]["url"].startswith(fake.url + "/api/v1/")

    replayed = await fake.replay(done[0].delivery_id)
    again_headers, again_body = recv.got[-1]
    assert replayed.status == 200 and len(recv.got) == 4 and again_body == body
    for name in ("X-Zammad-Delivery", "X-Hub-Signature", "X-Zammad-Trigger"):
        assert again_headers[name] == headers[name]
    fake.emit_tampered(ticket["id"], art["id"], "signature")
    await fake.wait_for_deliveries(5)
    bad_headers, bad_body = recv.got[-1]
    assert not verify("s3cret", bad_headers, bad_body)
    assert bad_headers["X-Zammad-Delivery"] != done[0].delivery_id


async def test_trigger_conditions_and_the_five_attempts(
    fake: FakeZammad, receiver: tuple[Receiver, str]
) -> None:
    recv, url = receiver
    fake.set_webhook(url, token="t")
    _, ticket, _ = await call(fake, "POST", "/tickets", new_ticket())  # created: not fired
    customer_msg = {"ticket_id": ticket["id"], "body": "more", "type": "web", "sender": "Customer"}
    await call(fake, "POST", "/ticket_articles", customer_msg)  # sender Customer: not fired
    fake.agent_reply(ticket["id"], "internal", public=False)  # internal: not fired
    assert fake.pending_deliveries() == 0 and fake.deliveries() == []

    recv.codes = [500] * 10
    fake.agent_reply(ticket["id"], "public")
    attempts = await fake.wait_for_deliveries(5, timeout=5)
    assert [d.status for d in attempts] == [500] * 5
    # waits of attempt * 10 s, scaled by time_scale (0.01): 0.1, 0.2, 0.3, 0.4 s
    gaps = [b - a for a, b in zip(recv.arrivals, recv.arrivals[1:], strict=False)]
    assert [g >= 0.1 * (n + 1) - 0.02 for n, g in enumerate(gaps)] == [True] * 4, gaps
    assert len({d.delivery_id for d in attempts}) == 1
    for _ in range(50):
        if fake.pending_deliveries() == 0:
            break
        await asyncio.sleep(0.02)
    assert fake.pending_deliveries() == 0 and len(fake.deliveries()) == 5  # no sixth attempt
