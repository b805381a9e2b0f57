"""The fake Zendesk answers as reference §5 says Zendesk does; its webhooks verify."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.harness import CommitThenReset
from tests.fakes.zendesk import FakeZendesk
from tests.fakes.zendesk_hooks import sign

EMAIL, TOKEN = "helpline@example.com", "zd-api-token-0123456789"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def auth(email: str = EMAIL, token: str = TOKEN, suffix: str = "/token") -> dict[str, str]:
    pair = base64.b64encode(f"{email}{suffix}:{token}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


async def call(
    fake: FakeZendesk,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, Any, Any]:
    """One request; (status, parsed JSON or text, headers)."""
    sent = auth() if headers is None else headers
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.request(method, fake.url + path, json=body, data=data, headers=sent) as answer,
    ):
        text = await answer.text()
        is_json = answer.content_type == "application/json"
        return answer.status, json.loads(text) if is_json else text, answer.headers


def ticket_body(external_id: str = "conv_1", text: str = "Hello") -> dict[str, Any]:
    return {
        "ticket": {
            "subject": "Help",
            "external_id": external_id,
            "tags": ["helpline"],
            "requester": {"name": "Alice", "email": "alice@example.com", "locale_id": 1},
            "comment": {"body": text, "public": True},
        }
    }


def verify(secret: str, headers: Any, body: bytes) -> bool:
    """An independent check, written from §5.7: base64(HMAC-SHA256(secret, ts + body))."""
    stamp = headers["X-Zendesk-Webhook-Signature-Timestamp"].encode()
    expected = base64.b64encode(hmac.new(secret.encode(), stamp + body, hashlib.sha256).digest())
    return hmac.compare_digest(expected.decode(), headers["X-Zendesk-Webhook-Signature"])


@asynccontextmanager
async def receiver(answers: list[int]) -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A webhook target on the test's loop answering `answers` in turn, then 200."""
    seen: list[web.Request] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request)
        return web.Response(status=answers.pop(0) if answers else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", seen
    finally:
        await runner.cleanup()


async def test_auth_is_basic_email_slash_token_and_refusals_are_zendesk_shaped() -> None:
    with FakeZendesk() as fake:
        assert isinstance(fake, FakeZendesk)
        status, body, headers = await call(fake, "GET", "/api/v2/users/me")
        assert status == 200 and body["user"]["id"] == fake.me["id"]
        assert body["user"]["role"] == "admin"
        assert int(headers["X-Rate-Limit-Remaining"]) == int(headers["X-Rate-Limit"]) - 1
        for wrong in (auth(token="nope"), auth(suffix=""), auth(email="x@example.com")):
            status, body, _ = await call(fake, "GET", "/api/v2/tickets", headers=wrong)
            assert (status, body) == (401, {"error": "Couldn't authenticate you"})
        assert (await call(fake, "GET", "/api/v2/tickets", headers={}))[0] == 401
        status, body, _ = await call(fake, "GET", "/api/v2/users/me.json", headers={})
        assert status == 200 and body["user"]["id"] is None  # anonymous, not a 401


async def test_create_lookup_and_append_as_the_backend_will() -> None:
    with FakeZendesk() as fake:
        status, created, headers = await call(fake, "POST", "/api/v2/tickets", ticket_body())
        assert status == 201 and headers["Location"].endswith("/api/v2/tickets/1.json")
        ticket = created["ticket"]
        alice = fake.find_user(email="alice@example.com")
        assert alice is not None and ticket["requester_id"] == alice["id"]
        assert ticket["status"] == "new" and ticket["tags"] == ["helpline"]
        first = fake.comments(ticket["id"])[0]
        assert first["author_id"] == alice["id"] and first["public"] is True

        # external ids are not unique: a second create with the same one lists both
        await call(fake, "POST", "/api/v2/tickets", ticket_body())
        status, found, _ = await call(fake, "GET", "/api/v2/tickets?external_id=conv_1")
        assert status == 200 and [t["id"] for t in found["tickets"]] == [1, 2]
        assert found["count"] == 2 and len(fake.tickets("conv_1")) == 2

        upload = await call(
            fake,
            "POST",
            "/api/v2/uploads?filename=a.png",
            data=b"\x89PNG",
            headers={**auth(), "Content-Type": "image/png"},
        )
        assert upload[0] == 201
        token = upload[1]["upload"]["token"]
        update = {
            "ticket": {
                "comment": {"body": "more", "author_id": alice["id"], "uploads": [token]},
                "metadata": {"helpline_event": "evt_1"},
                "status": "open",
            }
        }
        status, body, _ = await call(fake, "PUT", "/api/v2/tickets/1", update)
        assert status == 200 and body["ticket"]["status"] == "open"
        assert body["audit"]["metadata"]["custom"] == {"helpline_event": "evt_1"}
        await call(
            fake,
            "PUT",
            "/api/v2/tickets/1",
            {"ticket": {"comment": {"body": "note", "public": False}}},
        )

        status, listed, _ = await call(fake, "GET", "/api/v2/tickets/1/comments")
        rows = [(c["author_id"], c["public"], c["body"]) for c in listed["comments"]]
        assert rows == [
            (alice["id"], True, "Hello"),
            (alice["id"], True, "more"),
            (fake.me["id"], False, "note"),
        ]
        attachment = listed["comments"][1]["attachments"][0]
        assert attachment["file_name"] == "a.png" and attachment["content_type"] == "image/png"
        async with aiohttp.ClientSession() as http, http.get(attachment["content_url"]) as got:
            assert await got.read() == b"\x89PNG"
        status, audits, _ = await call(fake, "GET", "/api/v2/tickets/1/audits")
        markers = [a["metadata"]["custom"] for a in audits["audits"]]
        assert markers == [{}, {"helpline_event": "evt_1"}, {}]

        # cursor pagination over comments
        status, page, _ = await call(fake, "GET", "/api/v2/tickets/1/comments?page[size]=2")
        assert len(page["comments"]) == 2 and page["meta"]["has_more"] is True
        following = page["links"]["next"].removeprefix(fake.url)
        status, page, _ = await call(fake, "GET", following)
        assert [c["body"] for c in page["comments"]] == ["note"]
        assert page["meta"]["has_more"] is False


async def test_idempotency_key_replays_refuses_and_expires() -> None:
    clock = Clock()
    with FakeZendesk(clock=clock, idempotency_ttl=7200) as fake:
        key = {**auth(), "Idempotency-Key": "hl-create-conv_1"}
        first = await call(fake, "POST", "/api/v2/tickets", ticket_body(), headers=key)
        assert first[0] == 201 and first[2]["x-idempotency-lookup"] == "miss"
        again = await call(fake, "POST", "/api/v2/tickets", ticket_body(), headers=key)
        assert again[0] == 201 and again[2]["x-idempotency-lookup"] == "hit"
        assert again[1] == first[1] and again[2]["Location"] == first[2]["Location"]
        assert len(fake.tickets()) == 1

        status, body, _ = await call(
            fake, "POST", "/api/v2/tickets", ticket_body(text="x"), headers=key
        )
        assert status == 400 and body["error"] == "IdempotentRequestError"
        assert body["description"] == "Request parameters don't match the given idempotency key"

        # an answer lost after the commit: the retry with the same key finds the ticket
        fake.arm(CommitThenReset(), method="POST", path="^/api/v2/tickets$")
        other = {**auth(), "Idempotency-Key": "hl-create-conv_2"}
        with pytest.raises(aiohttp.ClientError):
            await call(fake, "POST", "/api/v2/tickets", ticket_body("conv_2"), headers=other)
        retry = await call(fake, "POST", "/api/v2/tickets", ticket_body("conv_2"), headers=other)
        assert retry[2]["x-idempotency-lookup"] == "hit" and len(fake.tickets("conv_2")) == 1

        clock.now += 7201  # past the window the key protects nothing
        late = await call(fake, "POST", "/api/v2/tickets", ticket_body(), headers=key)
        assert late[2]["x-idempotency-lookup"] == "miss" and len(fake.tickets("conv_1")) == 2


async def test_a_same_key_create_in_flight_meets_409() -> None:
    with FakeZendesk(create_delay=0.3) as fake:
        key = {**auth(), "Idempotency-Key": "k"}
        slow = asyncio.create_task(
            call(fake, "POST", "/api/v2/tickets", ticket_body(), headers=key)
        )
        await asyncio.sleep(0.1)
        status, _, _ = await call(fake, "POST", "/api/v2/tickets", ticket_body(), headers=key)
        assert status == 409 and (await slow)[0] == 201 and len(fake.tickets()) == 1


async def test_validation_not_found_and_conflicts_in_zendesk_shape() -> None:
    with FakeZendesk() as fake:
        await call(fake, "POST", "/api/v2/tickets", ticket_body())
        status, body, _ = await call(fake, "PUT", "/api/v2/tickets/1", {"ticket": {"status": "x"}})
        assert status == 422 and body["error"] == "RecordInvalid"
        assert body["description"] == "Record validation errors"
        assert body["details"]["status"][0]["error"] == "InvalidValue"
        blank = {"ticket": {"subject": "s", "comment": {"body": ""}}}
        assert (await call(fake, "POST", "/api/v2/tickets", blank))[0] == 422
        status, body, _ = await call(fake, "GET", "/api/v2/tickets/99")
        assert (status, body) == (404, {"error": "RecordNotFound", "description": "Not found"})
        status, body, _ = await call(fake, "GET", "/api/v2/nothing_here")
        assert (status, body["error"]) == (404, "InvalidEndpoint")
        status, text, headers = await call(
            fake,
            "POST",
            "/api/v2/tickets",
            data=b"{nope",
            headers={**auth(), "Content-Type": "application/json"},
        )
        assert status == 400 and isinstance(text, str) and "text/plain" in headers["Content-Type"]
        stale = {
            "ticket": {
                "safe_update": True,
                "updated_stamp": "2000-01-01T00:00:00Z",
                "comment": {"body": "x"},
            }
        }
        status, body, _ = await call(fake, "PUT", "/api/v2/tickets/1", stale)
        assert status == 409 and body["error"] == "UpdateConflict"
        fake.set_status(1, "closed")
        status, body, _ = await call(
            fake, "PUT", "/api/v2/tickets/1", {"ticket": {"comment": {"body": "late"}}}
        )
        assert status == 422 and "closed" in body["details"]["status"][0]["description"]


async def test_users_create_or_update_search_identities_and_merge() -> None:
    clock = Clock()
    with FakeZendesk(clock=clock, user_search_lag=30) as fake:
        spec = {"user": {"name": "Bob", "external_id": "contact_7", "phone": "+15550001"}}
        status, made, _ = await call(fake, "POST", "/api/v2/users/create_or_update", spec)
        assert status == 201 and made["user"]["role"] == "end-user"
        bob = made["user"]["id"]
        again = {"user": {"name": "Bob B", "external_id": "CONTACT_7", "email": "bob@example.com"}}
        status, updated, _ = await call(fake, "POST", "/api/v2/users/create_or_update", again)
        assert status == 200 and updated["user"]["id"] == bob
        by_mail = {"user": {"name": "Bob C", "email": "BOB@example.com"}}
        status, updated, _ = await call(fake, "POST", "/api/v2/users/create_or_update", by_mail)
        assert status == 200 and updated["user"]["id"] == bob
        assert sorted(i["type"] for i in fake.identities(bob)) == ["email", "phone_number"]

        status, body, _ = await call(
            fake, "POST", "/api/v2/users", {"user": {"name": "Eve", "email": "bob@example.com"}}
        )
        assert status == 422 and body["details"]["email"][0]["error"] == "DuplicateValue"

        status, found, _ = await call(fake, "GET", "/api/v2/users/search?external_id=contact_7")
        assert [u["id"] for u in found["users"]] == [bob]
        query = "/api/v2/users/search?query=phone:%2B15550001"
        assert (await call(fake, "GET", query))[1]["count"] == 0  # the index lags
        clock.now += 31
        assert [u["id"] for u in (await call(fake, "GET", query))[1]["users"]] == [bob]

        status, body, _ = await call(
            fake,
            "POST",
            f"/api/v2/users/{bob}/identities",
            {"identity": {"type": "phone_number", "value": "+15550002"}},
        )
        assert status == 201 and body["identity"]["user_id"] == bob
        carol = fake.add_user("Carol", "carol@example.com")
        status, body, _ = await call(
            fake,
            "POST",
            f"/api/v2/users/{carol['id']}/identities",
            {"identity": {"type": "phone_number", "value": "+15550002"}},
        )
        assert status == 422 and body["details"]["value"][0]["error"] == "DuplicateValue"
        listed = await call(fake, "GET", f"/api/v2/users/{bob}/identities")
        assert listed[1]["count"] == 3

        await call(
            fake,
            "POST",
            "/api/v2/tickets",
            {"ticket": {"requester_id": carol["id"], "comment": {"body": "hi"}}},
        )
        status, merged, _ = await call(
            fake, "PUT", f"/api/v2/users/{carol['id']}/merge", {"user": {"id": bob}}
        )
        assert status == 200 and merged["user"]["id"] == bob
        assert fake.ticket(1)["requester_id"] == bob and not fake.user(carol["id"])["active"]
        agent = fake.agent["id"]
        status, _, _ = await call(
            fake, "PUT", f"/api/v2/users/{agent}/merge", {"user": {"id": bob}}
        )
        assert status == 422


async def test_throttle_and_rate_limits_answer_429_with_retry_after() -> None:
    clock = Clock(1_699_999_990.0)  # 10 s into a minute
    with FakeZendesk(clock=clock, rate_limit=3, ticket_update_limit=(2, 600)) as fake:
        fake.throttle(2, retry_after=7)
        for _ in range(2):
            status, body, headers = await call(fake, "GET", "/api/v2/users/me")
            assert status == 429 and headers["Retry-After"] == "7"
            assert body["error"] == "APIRateLimitExceeded"
        statuses = [(await call(fake, "GET", "/api/v2/users/me"))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        _, _, headers = await call(fake, "GET", "/api/v2/users/me")
        assert headers["Retry-After"] == "50"  # to the end of this minute
        clock.now += 50
        await call(fake, "POST", "/api/v2/tickets", ticket_body())
        note = {"ticket": {"comment": {"body": "x"}}}
        statuses = [(await call(fake, "PUT", "/api/v2/tickets/1", note))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]


async def test_ticket_merge_is_a_job() -> None:
    with FakeZendesk() as fake:
        for n in (1, 2):
            await call(fake, "POST", "/api/v2/tickets", ticket_body(f"conv_{n}"))
        status, body, _ = await call(fake, "POST", "/api/v2/tickets/1/merge", {"ids": [2]})
        assert status == 200 and body["job_status"]["status"] == "queued"
        status, job, _ = await call(fake, "GET", f"/api/v2/job_statuses/{body['job_status']['id']}")
        assert job["job_status"]["status"] == "completed"
        assert fake.ticket(2)["status"] == "closed"


def test_signature_matches_the_test_vectors_of_section_10() -> None:
    secret, stamp, body = (
        "HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA=",
        "2021-07-25T10:00:00Z",
        (b'{"say": "hello"}'),
    )
    assert sign(secret, stamp, body) == "Rry/4TtIdFyawtXXp8QdI6tlAUUQ/5kL1OTp5qo/ZIk="
    vendor = sign(secret, stamp, body, "body+timestamp")  # the old page's published example
    assert vendor == "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw="


async def test_agent_reply_fires_a_signed_webhook_retried_under_one_invocation() -> None:
    with FakeZendesk(webhook_time_scale=0.01) as fake:
        await call(fake, "POST", "/api/v2/tickets", ticket_body())
        async with receiver([500]) as (url, seen):
            hook = fake.set_webhook(url, secret="s3cret")
            comment = fake.agent_reply(
                1, "We are on it", attachments=[("r.txt", "text/plain", b"r")]
            )
            attempts = await fake.wait_deliveries(2)
            assert [a.status for a in attempts] == [500, 200]
            assert len({a.invocation_id for a in attempts}) == 1
            assert all(verify("s3cret", a.headers, a.body) for a in attempts)
            assert not verify("other", attempts[0].headers, attempts[0].body)
            assert json.loads(attempts[1].body) == {"ticket_id": "1", "external_id": "conv_1"}
            assert seen[1].headers["X-Zendesk-Webhook-Id"] == hook.id
            stored = fake.comments(1)[-1]
            assert stored["id"] == comment["id"] and stored["author_id"] == fake.agent["id"]
            assert fake.attachment_content(stored["attachments"][0]["id"]) == b"r"

            # helpline's own API writes fire it too (loop prevention is the receiver's job)
            await call(fake, "PUT", "/api/v2/tickets/1", {"ticket": {"comment": {"body": "x"}}})
            await fake.wait_deliveries(3)

            fake.replay(attempts[1].invocation_id)  # the very same bytes and headers again
            replayed = (await fake.wait_deliveries(4))[-1]
            assert replayed.headers == attempts[0].headers and replayed.body == attempts[0].body

            forged = fake.send_forged(hook, b'{"ticket_id":"1"}', bad_signature=True)
            old = fake.send_forged(hook, b'{"ticket_id":"1"}', age=3600)
            done = {a.invocation_id: a for a in await fake.wait_deliveries(6)}
            assert not verify("s3cret", done[forged].headers, done[forged].body)
            assert verify("s3cret", done[old].headers, done[old].body)
            assert (
                done[old].headers["X-Zendesk-Webhook-Signature-Timestamp"]
                < (replayed.headers["X-Zendesk-Webhook-Signature-Timestamp"])
            )


async def test_event_subscribed_webhook_envelope_and_duplicates() -> None:
    with FakeZendesk(signature_order="body+timestamp") as fake:
        await call(fake, "POST", "/api/v2/tickets", ticket_body())
        async with receiver([]) as (url, _):
            fake.set_webhook(url, secret="k", mode="event")
            fake.duplicate_next()
            fake.agent_reply(1, "private", public=False)
            attempts = await fake.wait_deliveries(2)
            assert len({a.invocation_id for a in attempts}) == 2 and attempts[0].body == (
                attempts[1].body
            )
            envelope = json.loads(attempts[0].body)
            assert envelope["type"] == "zen:event-type:ticket.comment_added"
            assert envelope["detail"]["external_id"] == "conv_1"
            assert envelope["event"]["comment"]["is_public"] is False
            assert envelope["event"]["comment"]["author"]["is_staff"] is True
            headers = attempts[0].headers
            stamp = headers["X-Zendesk-Webhook-Signature-Timestamp"]
            assert (
                sign("k", stamp, attempts[0].body, "body+timestamp")
                == (headers["X-Zendesk-Webhook-Signature"])
            )
            assert not verify("k", headers, attempts[0].body)  # the current order differs
