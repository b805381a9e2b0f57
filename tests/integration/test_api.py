"""The /v1 API over a real socket: intake, idempotency, errors, stream, conversations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKENS, LiveDaemon, auth, message


async def test_a_message_goes_in_and_comes_out_of_the_stream(live: LiveDaemon) -> None:
    body = message(
        1, **{"from": {"email": "Ann@Example.COM", "phone": "+49 30 1234567", "name": "Ann"}}
    )
    status, ack, _ = await live.post("/v1/messages", body)
    assert status == 201
    assert set(ack) == {"offset", "event_id", "conversation_id", "contact_id", "duplicate"}
    assert ack["duplicate"] is False

    events = await live.stream()
    assert [e["type"] for e in events] == [
        "helpline.conversation.opened.v1",
        "helpline.message.inbound.v1",
    ]
    inbound = events[1]
    assert inbound["offset"] == ack["offset"] and inbound["id"] == ack["event_id"]
    assert inbound["subject"] == ack["conversation_id"]
    assert inbound["source"] == "/api/main"
    assert inbound["data"]["from"] == {
        "email": "ann@example.com",
        "phone": "+49301234567",
        "name": "Ann",
        "visitor_id": None,
    }
    assert inbound["data"]["channel"] == "api"
    assert inbound["data"]["contact_id"] == ack["contact_id"]


async def test_a_retry_with_the_same_key_returns_the_original_answer(live: LiveDaemon) -> None:
    first = await live.post("/v1/messages", message(1), **{"Idempotency-Key": "order-77"})
    again = await live.post("/v1/messages", message(1), **{"Idempotency-Key": "order-77"})
    assert (first[0], again[0]) == (201, 200)
    assert again[1] == {**first[1], "duplicate": True}
    assert len(await live.stream()) == 2  # opened + one message, not two

    reused = await live.post("/v1/messages", message(2), **{"Idempotency-Key": "order-77"})
    assert reused[0] == 422
    assert reused[1]["type"] == "urn:helpline:problem:idempotency-key-reused"
    assert "order-77" in reused[1]["detail"]


async def test_the_external_id_also_makes_a_request_idempotent(live: LiveDaemon) -> None:
    body = message(3, external_id="crm-4711")
    first = await live.post("/v1/messages", body)
    again = await live.post("/v1/messages", body)
    assert (first[0], again[0], again[1]["event_id"]) == (201, 200, first[1]["event_id"])


async def test_keys_are_scoped_to_the_calling_token(live: LiveDaemon) -> None:
    a = await live.post("/v1/messages", message(1), "main", **{"Idempotency-Key": "k"})
    b = await live.post("/v1/messages", message(1), "other", **{"Idempotency-Key": "k"})
    assert (a[0], b[0]) == (201, 201)
    assert a[1]["event_id"] != b[1]["event_id"]


async def test_handles_written_differently_find_one_contact(
    make_daemon: Callable[..., Any],
) -> None:
    live = await make_daemon('[identity]\ndefault_region = "DE"\n')
    first = await live.post("/v1/messages", message(1, **{"from": {"phone": "030 1234567"}}))
    second = await live.post(
        "/v1/messages",
        message(2, **{"from": {"phone": "0049-30-1234567", "email": "Ann@example.org"}}),
    )
    third = await live.post("/v1/messages", message(3, **{"from": {"email": "ann@EXAMPLE.org"}}))
    assert first[1]["contact_id"] == second[1]["contact_id"] == third[1]["contact_id"]
    assert first[1]["conversation_id"] == third[1]["conversation_id"]
    status, contact, _ = await live.get(f"/v1/contacts/{first[1]['contact_id']}")
    assert status == 200
    assert contact["contact_id"] == first[1]["contact_id"]
    assert [{"kind": h["kind"], "value": h["value"]} for h in contact["handles"]] == [
        {"kind": "email", "value": "ann@example.org"},
        {"kind": "phone", "value": "+49301234567"},
    ]


async def test_a_stranger_typing_someone_elses_email_never_merges_them(live: LiveDaemon) -> None:
    ann = await live.post("/v1/messages", message(1, **{"from": {"email": "ann@example.org"}}))
    bob = await live.post("/v1/messages", message(2, **{"from": {"phone": "+4930999999"}}))
    both = await live.post(
        "/v1/messages", message(3, **{"from": {"email": "ann@example.org", "phone": "+4930999999"}})
    )
    assert both[1]["contact_id"] == ann[1]["contact_id"] != bob[1]["contact_id"]
    _, bob_contact, _ = await live.get(f"/v1/contacts/{bob[1]['contact_id']}")
    assert [h["value"] for h in bob_contact["handles"]] == ["+4930999999"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"text": "hi"}, "from", "Field required"),
        ({"from": {"name": "Only A Name"}, "text": "hi"}, "from", "at least one of"),
        ({"from": {"email": "not-an-address"}, "text": "hi"}, "from.email", "not an email"),
        ({"from": {"phone": "12"}, "text": "hi"}, "from.phone", "12"),
        ({"from": {"email": "a@b.org"}, "text": ""}, "text", "at least 1"),
        ({"from": {"email": "a@b.org"}, "text": "x", "colour": "red"}, "colour", "unknown field"),
        ({"from": {"email": "a@b.org"}, "text": "x", "sent_at": "yesterday"}, "sent_at", "date"),
    ],
)
async def test_bad_bodies_get_a_problem_naming_the_field(
    live: LiveDaemon, body: dict[str, Any], field: str, fragment: str
) -> None:
    status, problem, headers = await live.post("/v1/messages", body)
    assert status == 400
    assert headers["Content-Type"].startswith("application/problem+json")
    assert problem["status"] == 400
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert field in fields, problem
    assert fragment in fields[field]
    assert await live.stream() == []


async def test_malformed_json_and_wrong_media_type(live: LiveDaemon) -> None:
    async with live.http.post(
        live.url + "/v1/messages",
        data=b'{"from": {',
        headers={**auth(), "Content-Type": "application/json"},
    ) as resp:
        problem = await resp.json(content_type=None)
        assert resp.status == 400 and "Invalid JSON" in problem["detail"]
    async with live.http.post(
        live.url + "/v1/messages",
        data="a=b",
        headers={**auth(), "Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status == 415
        assert "application/json" in (await resp.json(content_type=None))["detail"]


async def test_oversize_bodies_and_texts(make_daemon: Callable[..., Any]) -> None:
    live = await make_daemon('[ingest]\nmax_text_size = "1KiB"\n', http='max_body_size = "4KiB"\n')
    status, problem, _ = await live.post("/v1/messages", message(1, text="x" * 2000))
    assert status == 400 and problem["errors"][0]["field"] == "text"
    assert "max_text_size" in problem["detail"]
    status, problem, _ = await live.post("/v1/messages", message(2, text="y" * 5000))
    assert (status, problem["type"]) == (413, "urn:helpline:problem:body-too-large")
    status, _, _ = await live.post("/v1/messages", message(3))
    assert status == 201  # still serving


async def test_wrong_or_missing_token(live: LiveDaemon) -> None:
    async with live.http.post(live.url + "/v1/messages", json=message(1)) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in (await resp.json(content_type=None))["detail"]
    async with live.http.post(
        live.url + "/v1/messages", json=message(1), headers={"Authorization": "Bearer nope"}
    ) as resp:
        assert resp.status == 401
        assert "not one of the configured" in (await resp.json(content_type=None))["detail"]
    async with live.http.get(live.url + "/v1/stream") as resp:
        assert resp.status == 401
    assert TOKENS["main"] not in (live.daemon.state_dir / "helpline.db").read_bytes().decode(
        "latin-1"
    )


async def test_a_full_pending_queue_pushes_back_with_retry_after(
    make_daemon: Callable[..., Any],
) -> None:
    live = await make_daemon("[store]\nmax_pending = 1\n")
    entered, release = asyncio.Event(), asyncio.Event()

    async def holds_the_commit(tx: Any) -> None:
        entered.set()
        await release.wait()

    holder = asyncio.create_task(live.daemon.store.write(holds_the_commit))
    await asyncio.wait_for(entered.wait(), 5)
    status, problem, headers = await live.post("/v1/messages", message(1))
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert problem["type"] == "urn:helpline:problem:overloaded"
    release.set()
    await holder
    status, _, _ = await live.post("/v1/messages", message(1))
    assert status == 201  # serving again once the queue drained


async def test_stream_paging_and_validation(live: LiveDaemon) -> None:
    for n in range(5):
        await live.post("/v1/messages", message(n))
    status, page, _ = await live.get("/v1/stream?after=0&limit=3")
    assert status == 200 and len(page["events"]) == 3
    status, rest, _ = await live.get(f"/v1/stream?after={page['next_after']}&limit=100")
    offsets = [e["offset"] for e in page["events"] + rest["events"]]
    assert offsets == list(range(1, 11))
    status, empty, _ = await live.get("/v1/stream?after=10")
    assert (empty["events"], empty["next_after"]) == ([], 10)
    status, problem, _ = await live.get("/v1/stream?after=-1")
    assert status == 400 and problem["errors"][0]["field"] == "after"
    status, problem, _ = await live.get("/v1/stream?limit=5000")
    assert status == 400 and "1 to 1000" in problem["detail"]


async def _read_sse(resp: aiohttp.ClientResponse, count: int) -> list[tuple[int, str]]:
    got: list[tuple[int, str]] = []
    event_id = 0
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            got.append((event_id, line[6:]))
            if len(got) == count:
                return got
    return got


async def test_server_sent_events_follow_and_resume(live: LiveDaemon) -> None:
    await live.post("/v1/messages", message(1))
    headers = {**auth(), "Accept": "text/event-stream"}
    async with live.http.get(live.url + "/v1/stream", headers=headers) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        first = await _read_sse(resp, 2)
        assert [i for i, _ in first] == [1, 2]
        poster = asyncio.create_task(live.post("/v1/messages", message(2)))
        woke = await asyncio.wait_for(_read_sse(resp, 2), 5)  # woken by the commit, not a poll
        await poster
        assert [i for i, _ in woke] == [3, 4]
    resume = {**headers, "Last-Event-ID": "3"}
    async with live.http.get(live.url + "/v1/stream", headers=resume) as resp:
        (only,) = await asyncio.wait_for(_read_sse(resp, 1), 5)
        assert only[0] == 4


async def test_conversations_replies_and_transitions(live: LiveDaemon) -> None:
    _, ack, _ = await live.post("/v1/messages", message(1))
    conv = ack["conversation_id"]
    status, _, _ = await live.post(
        f"/v1/conversations/{conv}/replies",
        {"text": "We are on it.", "author": {"kind": "human", "name": "Agent Smith"}},
    )
    assert status == 201
    status, _, _ = await live.post(
        f"/v1/conversations/{conv}/replies", {"text": "customer is VIP", "internal": True}
    )
    assert status == 201
    status, resolved, _ = await live.post(f"/v1/conversations/{conv}/resolve", {"reason": "done"})
    assert (status, resolved["changed"], resolved["conversation"]["status"]) == (
        200,
        True,
        "resolved",
    )
    status, again, _ = await live.post(f"/v1/conversations/{conv}/resolve", None)
    assert (again["changed"], again["offset"]) == (False, None)

    # The customer writes again within the reopen window: the same conversation reopens.
    _, later, _ = await live.post("/v1/messages", message(1, text="Still broken"))
    assert later["conversation_id"] == conv

    status, detail, _ = await live.get(f"/v1/conversations/{conv}")
    assert status == 200
    # The reply's first_response.met event comes from the tracker, a moment later.
    events = [e for e in detail["events"] if ".first_response." not in e["type"]]
    assert [e["type"].split(".", 1)[1] for e in events] == [
        "conversation.opened.v1",
        "message.inbound.v1",
        "message.outbound.v1",
        "message.outbound.v1",
        "conversation.resolved.v1",
        "conversation.reopened.v1",
        "message.inbound.v1",
    ]
    outbound = events[2]["data"]
    assert outbound["author"] == {"kind": "human", "name": "Agent Smith"}
    assert outbound["internal"] is False and events[3]["data"]["internal"] is True
    assert detail["conversation"]["status"] == "open"
    await live.stream()  # every event valid against its schema

    status, listing, _ = await live.get("/v1/conversations?status=open&channel=api")
    assert [c["id"] for c in listing["conversations"]] == [conv]
    status, listing, _ = await live.get("/v1/conversations?status=resolved")
    assert listing["conversations"] == []
    status, problem, _ = await live.get("/v1/conversations?channel=fax")
    assert status == 400 and "email, webform, chat, voice, api" in problem["detail"]


async def test_explicit_thread_references_win(live: LiveDaemon) -> None:
    _, a, _ = await live.post("/v1/messages", message(1, thread="order-1"))
    _, b, _ = await live.post("/v1/messages", message(2, thread="order-1"))
    assert a["conversation_id"] == b["conversation_id"] and a["contact_id"] != b["contact_id"]


async def test_unknown_ids_are_404_problems(live: LiveDaemon) -> None:
    for path in ("/v1/conversations/conv_nope", "/v1/contacts/ct_nope"):
        status, problem, _ = await live.get(path)
        assert (status, problem["type"]) == (404, "urn:helpline:problem:not-found")
    status, problem, _ = await live.post("/v1/conversations/conv_nope/replies", {"text": "hi"})
    assert status == 404 and "conv_nope" in problem["detail"]


async def test_health_readiness_and_metrics(live: LiveDaemon) -> None:
    await live.post("/v1/messages", message(1))
    await live.post("/v1/messages", message(1), **{"Idempotency-Key": "a"})
    await live.post("/v1/messages", message(1), **{"Idempotency-Key": "a"})
    status, body, _ = await live.get("/healthz", token=None)
    assert (status, body) == (200, {"status": "ok"})
    status, ready, _ = await live.get("/readyz", token=None)
    assert status == 200 and ready["status"] == "ready"
    # opened + two messages; the third POST was a duplicate
    assert ready["store"]["writable"] is True and ready["store"]["head_offset"] == 3
    async with live.http.get(live.url + "/metrics") as resp:
        text = await resp.text()
    assert 'helpline_ingested_total{channel="api"} 2.0' in text
    assert 'helpline_duplicates_total{channel="api"} 1.0' in text
    assert "helpline_commit_seconds_bucket" in text
    assert "helpline_stream_head_offset 3.0" in text


async def test_wrong_method_is_405_with_allow(live: LiveDaemon) -> None:
    async with live.http.delete(live.url + "/v1/messages", headers=auth()) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
