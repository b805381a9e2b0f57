"""The Chatwoot fake answers as backends.md section 7 says Chatwoot does, and signs its
webhooks as section 7.7 / the section 10 vector say."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.fakes.chatwoot import FakeChatwoot
from tests.fakes.chatwoot_hooks import sign

TOKEN = "cw-user-token"
BOT = "cw-bot-token"


async def call(
    fake: FakeChatwoot,
    method: str,
    path: str,
    *,
    json: Any = None,
    data: Any = None,
    token: str | None = TOKEN,
    account: int | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request under the account prefix; the body parsed as JSON when it is JSON."""
    headers = {"api_access_token": token} if token else {}
    url = f"{fake.url}/api/v1/accounts/{account or fake.account_id}{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.request(method, url, json=json, data=data, headers=headers) as response,
    ):
        raw = await response.read()
        body: Any = raw.decode()
        if response.content_type == "application/json":
            body = orjson.loads(raw)
        return response.status, body, dict(response.headers)


async def new_contact(fake: FakeChatwoot, **fields: Any) -> dict[str, Any]:
    body = {"inbox_id": fake.api_inbox_id, "name": "Alice"} | fields
    status, answer, _ = await call(fake, "POST", "/contacts", json=body)
    assert status == 200, answer
    return dict(answer["payload"])


async def new_conversation(fake: FakeChatwoot, contact_id: int, source: str, **more: Any) -> Any:
    body = {"source_id": source, "inbox_id": fake.api_inbox_id, "contact_id": contact_id} | more
    status, answer, _ = await call(fake, "POST", "/conversations", json=body)
    assert status == 200, answer
    return answer


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written from the doc: sha256=hex(HMAC(secret, "{ts}.{body}"))."""
    stamp = headers["X-Chatwoot-Timestamp"]
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + mac, headers.get("X-Chatwoot-Signature", ""))


@dataclass
class Receiver:
    """A webhook endpoint on the test's loop: logs requests, answers the scripted statuses."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    delay: float = 0.0
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.script.pop(0) if self.script else 200)


def sent(rec: Receiver, delivery_id: str) -> list[tuple[dict[str, str], bytes]]:
    """What the receiver got for one delivery (deliveries may interleave on the wire)."""
    return [(h, b) for h, b in rec.got if h.get("X-Chatwoot-Delivery") == delivery_id]


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


def test_the_documented_vector_and_an_independent_computation_agree() -> None:
    body = b'{"event":"message_created","id":1}'
    expected = "sha256=823a1a725ba7190adb3be9ac276562a81e1baa43c941297cb27a162de29d94ed"
    assert sign("cw-test-secret", "1700000000", body) == expected
    headers = {"X-Chatwoot-Timestamp": "1700000000", "X-Chatwoot-Signature": expected}
    assert verify("cw-test-secret", headers, body)
    assert not verify("cw-test-secret", headers, body + b" ")


async def test_auth_answers_as_chatwoot_does() -> None:
    with FakeChatwoot() as fake:
        assert (await call(fake, "GET", "/inboxes", token=None))[:2] == (
            401,
            {"errors": ["You need to sign in or sign up before continuing."]},
        )
        assert (await call(fake, "GET", "/inboxes", token="nope"))[:2] == (
            401,
            {"error": "Invalid Access Token"},
        )
        assert (await call(fake, "GET", "/inboxes", token=BOT))[:2] == (
            401,
            {"error": "Access to this endpoint is not authorized for bots"},
        )
        assert (await call(fake, "GET", "/inboxes", account=99))[:2] == (
            404,
            {"error": "Resource could not be found"},
        )
        status, inboxes, _ = await call(fake, "GET", "/inboxes")
        assert status == 200
        types = {i["id"]: i["channel_type"] for i in inboxes["payload"]}
        assert types == {fake.api_inbox_id: "Channel::Api", fake.web_inbox_id: "Channel::WebWidget"}
        # Rack maps api-access-token and api_access_token to the same header.
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{fake.url}/api/v1/accounts/1/inboxes", headers={"api-access-token": TOKEN}
            ) as response,
        ):
            assert response.status == 200


async def test_contacts_create_validate_and_are_found() -> None:
    with FakeChatwoot() as fake:
        made = await new_contact(
            fake, email="Alice@X.test", identifier="hl_contact_1", phone_number="+4915112345678"
        )
        contact = made["contact"]
        assert contact["email"] == "alice@x.test"  # downcased on save
        assert made["contact_inbox"]["inbox"]["id"] == fake.api_inbox_id
        assert len(made["contact_inbox"]["source_id"]) == 36  # a generated UUID
        assert contact["contact_inboxes"][0]["source_id"] == made["contact_inbox"]["source_id"]

        chosen = await new_contact(fake, name="Bob", source_id="hl_conv_b")
        assert chosen["contact_inbox"]["source_id"] == "hl_conv_b"

        status, body, _ = await call(fake, "POST", "/contacts", json={"name": "No inbox"})
        assert status == 422 and "inbox_id" in body["error"]

        dup = {"inbox_id": fake.api_inbox_id, "identifier": "hl_contact_1", "email": "ALICE@x.test"}
        status, body, _ = await call(fake, "POST", "/contacts", json=dup)
        assert (status, body) == (
            422,
            {
                "message": "Email has already been taken, Identifier has already been taken",
                "attributes": ["email", "identifier"],
            },
        )
        bad = {"inbox_id": fake.api_inbox_id, "phone_number": "0151 123"}
        status, body, _ = await call(fake, "POST", "/contacts", json=bad)
        assert (status, body["attributes"]) == (422, ["phone_number"])
        assert body["message"] == "Phone number should be in e164 format"
        again = {"inbox_id": fake.api_inbox_id, "phone_number": "+4915112345678"}
        status, body, _ = await call(fake, "POST", "/contacts", json=again)
        assert body["message"] == "Phone number has already been taken"
        assert len(fake.contacts()) == 2  # refused creates left nothing behind

        status, found, _ = await call(fake, "GET", "/contacts/search?q=hl_contact")
        assert status == 200 and [c["id"] for c in found["payload"]] == [contact["id"]]
        assert found["meta"]["count"] == 1
        assert (await call(fake, "GET", "/contacts/search?q=HL_CONTACT"))[1]["payload"] == []
        status, body, _ = await call(fake, "GET", "/contacts/search")
        assert (status, body) == (422, {"error": "Specify search string with parameter q"})

        query = {
            "payload": [
                {
                    "attribute_key": "identifier",
                    "filter_operator": "equal_to",
                    "values": ["hl_contact_1"],
                    "query_operator": None,
                }
            ]
        }
        status, found, _ = await call(fake, "POST", "/contacts/filter", json=query)
        assert status == 200 and [c["id"] for c in found["payload"]] == [contact["id"]]

        status, shown, _ = await call(fake, "GET", f"/contacts/{contact['id']}")
        assert status == 200 and shown["payload"]["identifier"] == "hl_contact_1"
        assert (await call(fake, "GET", "/contacts/999"))[:2] == (
            404,
            {"error": "Resource could not be found"},
        )
        assert fake.contact_by_identifier("hl_contact_1") is not None


async def test_contact_inboxes_are_found_or_created_by_source_id() -> None:
    with FakeChatwoot() as fake:
        alice = (await new_contact(fake))["contact"]
        bob = (await new_contact(fake, name="Bob"))["contact"]
        body = {"inbox_id": fake.api_inbox_id, "source_id": "hl_conv_1"}
        path = f"/contacts/{alice['id']}/contact_inboxes"
        first = await call(fake, "POST", path, json=body)
        second = await call(fake, "POST", path, json=body)
        assert first[0] == second[0] == 200
        assert first[1] == second[1] and first[1]["source_id"] == "hl_conv_1"
        assert (
            len([ci for ci in fake.contact_inboxes.values() if ci.contact_id == alice["id"]]) == 2
        )
        # the same source_id for another contact in that inbox breaks the unique index
        status, _, _ = await call(fake, "POST", f"/contacts/{bob['id']}/contact_inboxes", json=body)
        assert status == 500
        status, body404, _ = await call(fake, "POST", path, json={"inbox_id": 77})
        assert (status, body404) == (404, {"error": "Resource could not be found"})


async def test_conversations_and_lock_to_single_conversation() -> None:
    with FakeChatwoot() as fake:
        alice = (await new_contact(fake, identifier="hl_contact_1"))["contact"]
        status, body, _ = await call(fake, "POST", "/conversations", json={"contact_id": 1})
        assert status == 422 and "source_id" in body["error"]

        extra = {"custom_attributes": {"helpline_cid": "c1"}, "message": {"content": "hi"}}
        one = await new_conversation(fake, alice["id"], "hl_conv_1", **extra)
        assert one["inbox_id"] == fake.api_inbox_id and one["status"] == "open"
        assert one["custom_attributes"] == {"helpline_cid": "c1"}
        assert one["meta"]["contact_inbox"]["source_id"] == "hl_conv_1"
        assert one["messages"][0]["message_type"] == 1  # `message` defaults to outgoing
        two = await new_conversation(fake, alice["id"], "hl_conv_1")
        assert two["id"] != one["id"]  # without the lock, a retry duplicates

        fake.set_lock_to_single_conversation(True)
        three = await new_conversation(fake, alice["id"], "hl_conv_1", **extra)
        assert three["id"] == one["id"]  # the lock makes create idempotent...
        assert [m["content"] for m in fake.messages(one["id"])] == ["hi", "hi"]  # ...not `message`
        assert len(fake.tickets_by_source_id("hl_conv_1")) == 2
        assert len(fake.tickets_by_attribute("helpline_cid", "c1")) == 1

        only_source = await call(fake, "POST", "/conversations", json={"source_id": "hl_conv_1"})
        assert only_source[0] == 200 and only_source[1]["id"] == one["id"]
        assert (await call(fake, "POST", "/conversations", json={"source_id": "zz"}))[0] == 404

        bob = (await new_contact(fake, name="Bob"))["contact"]
        taken = {"source_id": "hl_conv_1", "inbox_id": fake.api_inbox_id, "contact_id": bob["id"]}
        assert (await call(fake, "POST", "/conversations", json=taken))[:2] == (
            422,
            {"error": "source_id should be unique"},
        )

        status, listed, _ = await call(fake, "GET", f"/contacts/{alice['id']}/conversations")
        assert status == 200 and [c["id"] for c in listed["payload"]] == [two["id"], one["id"]]
        status, shown, _ = await call(fake, "GET", f"/conversations/{one['id']}")
        assert status == 200 and shown["id"] == one["id"]

        path = f"/conversations/{one['id']}/toggle_status"
        status, toggled, _ = await call(fake, "POST", path, json={"status": "resolved"})
        assert status == 200 and toggled["payload"]["current_status"] == "resolved"
        assert toggled["payload"]["conversation_id"] == one["id"]
        status, toggled, _ = await call(fake, "POST", path, token=BOT)
        assert toggled["payload"]["current_status"] == "open"  # no status: toggles


async def test_messages_types_notes_source_ids_and_attachments() -> None:
    with FakeChatwoot() as fake:
        alice = (await new_contact(fake))["contact"]
        conv = await new_conversation(fake, alice["id"], "hl_conv_1")
        path = f"/conversations/{conv['id']}/messages"
        incoming = {"content": "help", "message_type": "incoming", "source_id": "evt_1"}
        status, msg, _ = await call(fake, "POST", path, json=incoming)
        assert status == 200 and msg["message_type"] == 0 and msg["source_id"] == "evt_1"
        assert msg["sender"]["type"] == "contact" and msg["sender"]["id"] == alice["id"]
        note = {"content": "internal", "message_type": "outgoing", "private": True}
        status, msg, _ = await call(fake, "POST", path, json=note)
        assert msg["message_type"] == 1 and msg["private"] is True
        assert msg["sender"] == {
            "id": fake.api_user_id,
            "name": "Helpline API",
            "available_name": "Helpline API",
            "avatar_url": "",
            "type": "user",
            "availability_status": "online",
            "thumbnail": "",
        }
        status, msg, _ = await call(fake, "POST", path, json={"content": "x", "message_type": "x"})
        assert (status, msg) == (422, {"error": "'x' is not a valid message_type"})

        form = aiohttp.FormData()
        form.add_field("content", "see file")
        form.add_field("message_type", "incoming")
        form.add_field("private", "false")
        form.add_field("attachments[]", b"%PDF-1", filename="a.pdf", content_type="application/pdf")
        status, msg, _ = await call(fake, "POST", path, data=form)
        assert status == 200 and msg["private"] is False
        (attachment,) = msg["attachments"]
        assert attachment["file_type"] == "file" and attachment["file_size"] == 6
        async with aiohttp.ClientSession() as http, http.get(attachment["data_url"]) as got:
            assert await got.read() == b"%PDF-1"

        for n in range(22):
            await call(fake, "POST", path, json={"content": f"m{n}", "source_id": f"evt_x{n}"})
        status, listed, _ = await call(fake, "GET", path)
        assert status == 200 and len(listed["payload"]) == 20
        assert listed["payload"][-1]["source_id"] == "evt_x21"
        oldest = listed["payload"][0]["id"]
        status, older, _ = await call(fake, "GET", f"{path}?before={oldest}")
        assert [m["source_id"] for m in older["payload"]][:2] == ["evt_1", None]
        assert fake.messages_by_source_id("evt_1")[0]["message_type"] == "incoming"
        (stored,) = [m for m in fake.messages(conv["id"]) if m["attachments"]]
        assert stored["attachments"] == [("a.pdf", "application/pdf", b"%PDF-1")]

        # incoming is for API inboxes only; incoming reopens a resolved conversation
        web_conv = await new_conversation(
            fake, alice["id"], "w1", inbox_id=fake.web_inbox_id, status="resolved"
        )
        web_path = f"/conversations/{web_conv['id']}/messages"
        status, body, _ = await call(fake, "POST", web_path, json=incoming)
        assert (status, body) == (
            422,
            {"error": "Incoming messages are only allowed in Api inboxes"},
        )
        await call(
            fake, "POST", f"/conversations/{conv['id']}/toggle_status", json={"status": "resolved"}
        )
        await call(fake, "POST", path, json={"content": "again", "message_type": "incoming"})
        assert fake.tickets()[0]["status"] == "open"

        status, msg, _ = await call(fake, "POST", path, token=BOT, json={"content": "bot"})
        assert status == 200 and msg["sender"]["type"] == "agent_bot"


async def test_message_source_id_can_be_dropped_like_older_versions() -> None:
    with FakeChatwoot(honour_message_source_id=False) as fake:
        alice = (await new_contact(fake))["contact"]
        conv = await new_conversation(fake, alice["id"], "hl_conv_1")
        body = {"content": "x", "message_type": "incoming", "source_id": "evt_1"}
        msg = (await call(fake, "POST", f"/conversations/{conv['id']}/messages", json=body))[1]
        assert msg["source_id"] is None


async def test_contact_merge_moves_conversations_to_the_base() -> None:
    with FakeChatwoot() as fake:
        base = (await new_contact(fake, email="a@x.test"))["contact"]
        mergee = (await new_contact(fake, identifier="hl_contact_9"))["contact"]
        conv = await new_conversation(fake, mergee["id"], "hl_conv_9")
        body = {"base_contact_id": base["id"], "mergee_contact_id": mergee["id"]}
        status, merged, _ = await call(fake, "POST", "/actions/contact_merge", json=body)
        assert status == 200 and merged["id"] == base["id"]
        assert merged["identifier"] == "hl_contact_9" and merged["email"] == "a@x.test"
        assert conv["meta"]["sender"]["id"] == mergee["id"]
        assert fake.tickets()[0]["contact_id"] == base["id"]
        assert (await call(fake, "GET", f"/contacts/{mergee['id']}"))[0] == 404


async def test_throttle_is_rack_attack_shaped() -> None:
    with FakeChatwoot() as fake:
        fake.throttle(2)
        status, body, headers = await call(fake, "GET", "/inboxes")
        assert (status, body) == (429, "Retry later\n") and "Retry-After" not in headers
        assert (await call(fake, "GET", "/inboxes", token=None))[0] == 429  # before auth
        assert (await call(fake, "GET", "/inboxes"))[0] == 200
        fake.throttle(1, retry_after=30)
        status, _, headers = await call(fake, "GET", "/inboxes")
        assert status == 429 and headers["Retry-After"] == "30"


async def test_agent_reply_is_a_signed_message_created_webhook() -> None:
    with FakeChatwoot() as fake:
        async with receiver() as rec:
            secret = fake.set_webhook(rec.url, secret="s3cret")
            alice = (await new_contact(fake))["contact"]
            conv = await new_conversation(fake, alice["id"], "hl_conv_1")
            reply = fake.agent_reply(
                conv["id"], "Hello <b>", attachments=[("x.png", "image/png", b"PNG")]
            )
            assert reply["author"]["id"] == fake.agent_id and reply["message_type"] == "outgoing"
            (delivery,) = await fake.wait_deliveries(1, event="message_created")
            assert delivery.ok
            ((headers, body),) = sent(rec, delivery.delivery_id)
            assert body == delivery.body and b"\\u003cb\\u003e" in body  # Rails escaping
            assert verify(secret, headers, body)
            assert headers["X-Chatwoot-Delivery"] == delivery.delivery_id
            payload = orjson.loads(body)
            assert payload["event"] == "message_created"
            assert payload["message_type"] == "outgoing" and payload["private"] is False
            assert payload["sender"]["type"] == "user" and payload["sender"]["id"] == fake.agent_id
            assert payload["conversation"]["id"] == conv["id"]
            assert payload["conversation"]["contact_inbox"]["source_id"] == "hl_conv_1"
            assert payload["inbox"] == {"id": fake.api_inbox_id, "name": "Helpline"}
            assert payload["account"]["id"] == fake.account_id
            assert payload["attachments"][0]["file_type"] == "image"
            assert payload["created_at"].endswith("Z")
            events = [d.event for d in fake.deliveries()]
            assert events == ["conversation_created", "message_created"]

            fake.agent_reply(conv["id"], "note", public=False)
            noted = (await fake.wait_deliveries(2, event="message_created"))[-1]
            assert orjson.loads(sent(rec, noted.delivery_id)[0][1])["private"] is True

            # helpline's own write echoes back too (loop prevention is the receiver's job)
            own = {"content": "c", "message_type": "incoming", "source_id": "evt_7"}
            await call(fake, "POST", f"/conversations/{conv['id']}/messages", json=own)
            echoed = (await fake.wait_deliveries(3, event="message_created"))[-1].payload
            assert echoed["source_id"] == "evt_7" and echoed["message_type"] == "incoming"
            assert echoed["sender"]["type"] == "contact"


async def test_retries_keep_the_delivery_id_and_resign() -> None:
    ticks = itertools.count(1_700_000_000)
    fake = FakeChatwoot(webhook_attempts=3, time_scale=0.01, clock=lambda: float(next(ticks)))
    with fake:
        async with receiver() as rec:
            secret = fake.set_webhook(rec.url)
            alice = (await new_contact(fake))["contact"]
            conv = await new_conversation(fake, alice["id"], "hl_conv_1")
            await fake.wait_deliveries(1)
            rec.script = [503, 429, 200]
            fake.agent_reply(conv["id"], "hi")
            (delivery,) = await fake.wait_deliveries(1, event="message_created")
            assert [a.status for a in delivery.attempts] == [503, 429, 200] and delivery.ok
            tries = sent(rec, delivery.delivery_id)
            assert len(tries) == 3 and [b for _, b in tries] == [delivery.body] * 3
            assert len({h["X-Chatwoot-Timestamp"] for h, _ in tries}) == 3
            assert all(verify(secret, h, b) for h, b in tries)

            rec.script = [400]
            fake.agent_reply(conv["id"], "again")
            done = await fake.wait_deliveries(2, event="message_created")
            assert [a.status for a in done[-1].attempts] == [400]  # other 4xx are final
            assert fake.messages(conv["id"])[-1]["status"] == "failed"


async def test_default_is_one_attempt_and_a_failed_message() -> None:
    with FakeChatwoot(webhook_timeout=0.2) as fake:
        async with receiver() as rec:
            fake.set_webhook(rec.url)
            alice = (await new_contact(fake))["contact"]
            conv = await new_conversation(fake, alice["id"], "hl_conv_1")
            await fake.wait_deliveries(1, event="conversation_created")
            rec.script = [500]
            fake.agent_reply(conv["id"], "lost")
            (delivery,) = await fake.wait_deliveries(1, event="message_created")
            assert [a.status for a in delivery.attempts] == [500] and not delivery.ok
            last = fake.messages(conv["id"])[-1]
            assert last["status"] == "failed" and last["content_attributes"]["external_error"]

            rec.delay = 0.5
            fake.agent_reply(conv["id"], "slow")
            slow = (await fake.wait_deliveries(2, event="message_created"))[-1]
            assert slow.attempts[0].status is None and "Timeout" in (slow.attempts[0].error or "")


async def test_replays_forgeries_and_unsigned_versions() -> None:
    with FakeChatwoot() as fake:
        async with receiver() as rec:
            secret = fake.set_webhook(rec.url)
            alice = (await new_contact(fake))["contact"]
            conv = await new_conversation(fake, alice["id"], "hl_conv_1")
            fake.agent_reply(conv["id"], "hi")
            (delivery,) = await fake.wait_deliveries(1, event="message_created")
            await fake.wait_deliveries(2)  # nothing else in flight: replays are the last ones
            first_headers = sent(rec, delivery.delivery_id)[0][0]

            attempt = await fake.replay(delivery.delivery_id, fresh=False)
            assert attempt.status == 200
            assert rec.got[-1][0]["X-Chatwoot-Signature"] == first_headers["X-Chatwoot-Signature"]
            await fake.replay(delivery.delivery_id)
            assert rec.got[-1][0]["X-Chatwoot-Delivery"] == delivery.delivery_id
            assert verify(secret, *rec.got[-1])

            await fake.send_tampered(delivery.delivery_id, bad_signature=True)
            assert not verify(secret, *rec.got[-1])
            await fake.send_tampered(delivery.delivery_id, age=600)
            headers, body = rec.got[-1]
            assert verify(secret, headers, body)
            assert int(headers["X-Chatwoot-Timestamp"]) <= fake.clock() - 599

    with FakeChatwoot(webhook_signing="unsigned") as fake:
        async with receiver() as rec:
            fake.set_webhook(rec.url)
            alice = (await new_contact(fake))["contact"]
            await new_conversation(fake, alice["id"], "hl_conv_1")
            await fake.wait_deliveries(1)
            assert not [h for h in rec.got[0][0] if h.lower().startswith("x-chatwoot")]

    with FakeChatwoot(webhook_signing="fork_hmac_body") as fake:
        async with receiver() as rec:
            fake.set_webhook(rec.url)
            alice = (await new_contact(fake))["contact"]
            await new_conversation(fake, alice["id"], "hl_conv_1")
            await fake.wait_deliveries(1)
            headers, body = rec.got[0]
            token = fake.inboxes[fake.api_inbox_id].hmac_token
            mac = hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
            assert headers["X-Chatwoot-Signature"] == "sha256=" + mac
            assert "X-Chatwoot-Timestamp" not in headers


async def test_account_webhooks_follow_their_subscriptions() -> None:
    with FakeChatwoot() as fake:
        async with receiver() as rec:
            bad = {"url": "not a url", "subscriptions": ["message_created"]}
            assert (await call(fake, "POST", "/webhooks", json=bad))[:2] == (
                422,
                {"message": "Url is invalid", "attributes": ["url"]},
            )
            made = {"url": rec.url, "subscriptions": ["conversation_status_changed"]}
            status, body, _ = await call(fake, "POST", "/webhooks", json=made)
            hook = body["payload"]["webhook"]
            assert status == 200 and hook["secret"]
            alice = (await new_contact(fake))["contact"]
            conv = await new_conversation(fake, alice["id"], "hl_conv_1")
            fake.agent_reply(conv["id"], "not subscribed")
            fake.agent_set_status(conv["id"], "resolved")
            (delivery,) = await fake.wait_deliveries(1)
            assert delivery.event == "conversation_status_changed" and delivery.kind == "account"
            assert delivery.payload["status"] == "resolved"
            assert verify(hook["secret"], *rec.got[0])
            listed = (await call(fake, "GET", "/webhooks"))[1]["payload"]["webhooks"]
            assert [h["id"] for h in listed] == [hook["id"]]
