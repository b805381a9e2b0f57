"""Single point of contact over the API: linking, merging on verified evidence, splitting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from tests.conftest import LiveDaemon, message


def sender(**handles: str) -> dict[str, Any]:
    return {"from": handles}


async def types(live: LiveDaemon) -> list[str]:
    return [e["type"].removeprefix("helpline.") for e in await live.stream()]


async def test_a_form_with_email_and_phone_links_them(live: LiveDaemon) -> None:
    _, by_mail, _ = await live.post("/v1/messages", message(1, **sender(email="ann@example.org")))
    _, both, _ = await live.post(
        "/v1/messages", message(2, **sender(email="ann@example.org", phone="+49 30 1234567"))
    )
    _, by_phone, _ = await live.post("/v1/messages", message(3, **sender(phone="+4930 1234567")))
    assert by_mail["contact_id"] == both["contact_id"] == by_phone["contact_id"]
    assert by_mail["conversation_id"] == by_phone["conversation_id"]  # across channels, one thread


async def test_each_handle_records_the_message_that_linked_it(live: LiveDaemon) -> None:
    _, first, _ = await live.post("/v1/messages", message(1, **sender(email="ann@example.org")))
    _, second, _ = await live.post(
        "/v1/messages",
        message(2, **sender(email="ann@example.org", phone="+4930555666")),
        token="crm",
    )
    _, view, _ = await live.get(f"/v1/contacts/{first['contact_id']}")
    trail = {h["value"]: (h["cause_event_id"], h["verified"]) for h in view["handles"]}
    assert trail == {
        "ann@example.org": (first["event_id"], False),
        "+4930555666": (second["event_id"], True),
    }


async def test_unverified_claims_never_merge_and_suggest_once(live: LiveDaemon) -> None:
    _, ann, _ = await live.post("/v1/messages", message(1, **sender(email="ann@example.org")))
    _, bob, _ = await live.post("/v1/messages", message(2, **sender(phone="+4930555666")))
    for n in (3, 4):  # the same claim twice
        _, claim, _ = await live.post(
            "/v1/messages", message(n, **sender(email="ann@example.org", phone="+4930555666"))
        )
        assert claim["contact_id"] == ann["contact_id"]
    assert (await types(live)).count("contact.link_suggested.v1") == 1
    suggestion = next(
        e for e in await live.stream() if e["type"] == "helpline.contact.link_suggested.v1"
    )
    assert suggestion["data"]["contact_ids"] == [ann["contact_id"], bob["contact_id"]]
    assert suggestion["subject"] == ann["contact_id"]
    _, found, _ = await live.get("/v1/contacts?handle=%2B4930555666")
    assert found["contact_id"] == bob["contact_id"]  # still Bob's
    assert "contact.merged.v1" not in await types(live)


async def test_a_trusted_caller_merges_and_any_handle_finds_the_survivor(
    live: LiveDaemon,
) -> None:
    _, ann, _ = await live.post("/v1/messages", message(1, **sender(email="ann@example.org")))
    _, phone, _ = await live.post("/v1/messages", message(2, **sender(phone="+4930555666")))
    status, merged, _ = await live.post(
        "/v1/messages",
        message(3, **sender(email="ann@example.org", phone="+4930555666", visitor_id="v-77")),
        token="crm",
    )
    assert status == 201
    assert merged["contact_id"] == ann["contact_id"]  # the older contact survives
    event = next(e for e in await live.stream() if e["type"] == "helpline.contact.merged.v1")
    assert event["data"]["survivor_id"] == ann["contact_id"]
    assert event["data"]["merged_ids"] == [phone["contact_id"]]
    assert event["data"]["evidence"] == "trusted_api_token"
    assert event["data"]["cause_event_id"] == merged["event_id"]
    assert {h["value"] for h in event["data"]["handles"]} == {
        "ann@example.org",
        "+4930555666",
        "v-77",
    }

    for handle in ("ANN@example.org", "+49 30 555666", "v-77"):
        status, found, _ = await live.get(f"/v1/contacts?handle={quote(handle)}")
        assert (status, found["contact_id"]) == (200, ann["contact_id"]), handle
    status, old_id, _ = await live.get(f"/v1/contacts/{phone['contact_id']}")
    assert old_id["contact_id"] == ann["contact_id"]
    assert old_id["merged_ids"] == [phone["contact_id"]]
    # The phone-only customer's next message joins the merged person's latest conversation.
    _, later, _ = await live.post("/v1/messages", message(4, **sender(phone="+4930555666")))
    assert later["contact_id"] == ann["contact_id"]
    assert later["conversation_id"] == merged["conversation_id"]


async def test_a_split_undoes_a_merge(live: LiveDaemon) -> None:
    _, ann, _ = await live.post("/v1/messages", message(1, **sender(email="ann@example.org")))
    _, bob, _ = await live.post("/v1/messages", message(2, **sender(phone="+4930555666")))
    await live.post(
        "/v1/messages",
        message(3, **sender(email="ann@example.org", phone="+4930555666")),
        token="crm",
    )
    status, split, _ = await live.post(
        f"/v1/contacts/{bob['contact_id']}/split", {"reason": "two people share a phone"}
    )
    assert status == 200
    assert split["contact"]["contact_id"] == bob["contact_id"]
    assert [h["value"] for h in split["contact"]["handles"]] == ["+4930555666"]
    _, found, _ = await live.get("/v1/contacts?handle=%2B4930555666")
    assert found["contact_id"] == bob["contact_id"]
    _, ann_view, _ = await live.get(f"/v1/contacts/{ann['contact_id']}")
    assert ann_view["merged_ids"] == []
    assert (await types(live))[-1] == "contact.split.v1"
    status, problem, _ = await live.post(f"/v1/contacts/{bob['contact_id']}/split", None)
    assert status == 404 and "not merged" in problem["detail"]


async def test_lookups_by_any_written_form(make_daemon: Callable[..., Any]) -> None:
    live = await make_daemon(
        '[identity]\ndefault_region = "DE"\ncase_sensitive_domains = ["legacy.example"]\n'
    )
    _, a, _ = await live.post(
        "/v1/messages", message(1, **sender(email="Ann+orders@gmail.com", phone="030 1234567"))
    )
    for written in ("ann@GMAIL.com", "ann+other@gmail.com", "0049 30 1234567", "030-1234567"):
        status, found, _ = await live.get(f"/v1/contacts?handle={quote(written)}")
        assert (status, found["contact_id"]) == (200, a["contact_id"]), written
    _, b, _ = await live.post("/v1/messages", message(2, **sender(email="Bob@legacy.example")))
    _, c, _ = await live.post("/v1/messages", message(3, **sender(email="bob@legacy.example")))
    assert b["contact_id"] != c["contact_id"]  # that domain's mailboxes differ by case
    status, problem, _ = await live.get("/v1/contacts?handle=nobody@example.org")
    assert status == 404 and "nobody@example.org" in problem["detail"]
    status, problem, _ = await live.get("/v1/contacts?handle=")
    assert status == 400 and problem["errors"][0]["field"] == "handle"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_continuity_windows(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await make_daemon(
        '[conversations]\nreopen_window = "1d"\nmax_reference_age = "30d"\n', clock=clock
    )
    ann = sender(email="ann@example.org")
    _, first, _ = await live.post("/v1/messages", message(1, thread="T-1", **ann))
    clock.now += 2 * 86400  # past the reopen window: a new conversation, linked to the old
    _, second, _ = await live.post("/v1/messages", message(2, **ann))
    assert second["conversation_id"] != first["conversation_id"]
    _, view, _ = await live.get(f"/v1/conversations/{second['conversation_id']}")
    assert view["conversation"]["previous_id"] == first["conversation_id"]
    assert view["events"][0]["data"]["previous_conversation_id"] == first["conversation_id"]

    clock.now += 10 * 86400  # an explicit reference still wins, whatever the window
    _, third, _ = await live.post("/v1/messages", message(3, thread="T-1", **ann))
    assert third["conversation_id"] == first["conversation_id"]
    clock.now += 40 * 86400  # ... but not past max_reference_age
    _, fourth, _ = await live.post("/v1/messages", message(4, thread="T-1", **ann))
    assert fourth["conversation_id"] not in (first["conversation_id"], second["conversation_id"])
