"""Generated customer journeys against a real daemon, judged against their ground truth.

Hundreds of customers reach out over the API, concurrently (a bounded number of
requests in flight, each customer's messages in order), with retries, double
submits, repeats and traps (tests/journeys.py). Checked: every exact duplicate
is suppressed, no two different customers ever share a contact (pairwise
precision 1.0), and every link the evidence allows is made (recall against the
evidence-allowed partition 1.0). The figures are printed on one line.

Regenerate another run: HELPLINE_JOURNEY_SEED=2 HELPLINE_JOURNEY_CUSTOMERS=1000 pytest -s ...
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from gateway.near_duplicates import ANONYMOUS_REASON
from tests.conftest import LiveDaemon
from tests.journeys import (
    Journey,
    Message,
    Request,
    expected_contacts,
    false_merges,
    generate,
    pair_scores,
)

SEED = int(os.environ.get("HELPLINE_JOURNEY_SEED", "1"))
CUSTOMERS = int(os.environ.get("HELPLINE_JOURNEY_CUSTOMERS", "300"))
IN_FLIGHT = 20  # requests in flight at once

Answer = tuple[Request, int, dict[str, Any]]


async def run(live: LiveDaemon, journey: Journey) -> list[Answer]:
    """Send every request: each customer in order, at most IN_FLIGHT at once overall."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    copies = journey.requests_of()
    done = {m.id: asyncio.Event() for m in journey.messages}
    answers: list[Answer] = []

    async def send(request: Request) -> None:
        async with gate:
            status, body, _ = await live.post(
                "/v1/messages", request.body, token=request.token, **request.headers
            )
        answers.append((request, status, body))

    async def customer(messages: list[Message]) -> None:
        for message in messages:
            for before in message.after:  # another customer's handle must have history
                await done[before].wait()
            if message.concurrent:  # a double click: the copies race each other
                await asyncio.gather(*(send(r) for r in copies[message.id]))
            else:  # a retry: the next copy leaves when the previous one is answered
                for request in copies[message.id]:
                    await send(request)
            done[message.id].set()

    per_customer: dict[int, list[Message]] = {}
    for message in journey.messages:
        per_customer.setdefault(message.customer, []).append(message)
    await asyncio.wait_for(
        asyncio.gather(*(customer(ms) for ms in per_customer.values())), timeout=600
    )
    return answers


async def whole_stream(live: LiveDaemon) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        status, page, _ = await live.get(f"/v1/stream?after={after}&limit=1000")
        assert status == 200
        if not page["events"]:
            return events
        events.extend(page["events"])
        after = page["next_after"]


async def survivors(live: LiveDaemon, contact_ids: set[str]) -> dict[str, str]:
    """Each contact id as it stands now: the survivor of whatever it was merged into."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(contact_id: str) -> tuple[str, str]:
        async with gate:
            status, body, _ = await live.get(f"/v1/contacts/{contact_id}")
        assert status == 200, (contact_id, body)
        return contact_id, str(body["contact_id"])

    return dict(await asyncio.gather(*(one(c) for c in sorted(contact_ids))))


def sender_of(message: Message) -> dict[str, str | None]:
    handles = dict(message.handles)
    return {
        "email": handles.get("email"),
        "phone": handles.get("phone"),
        "visitor_id": handles.get("visitor"),
    }


async def test_customer_journeys(make_daemon: Callable[..., Any]) -> None:
    started = time.monotonic()
    journey = generate(SEED, CUSTOMERS)
    assert generate(SEED, CUSTOMERS) == journey  # a seed regenerates the same journey
    live: LiveDaemon = await make_daemon('[identity]\ndefault_region = "DE"\n')
    answers = await run(live, journey)
    sending = time.monotonic() - started

    # (a) Exact duplicates: one event per logical message; every copy the first answer.
    assert len(answers) == len(journey.requests)
    by_message: dict[str, list[tuple[Request, int, dict[str, Any]]]] = {}
    for request, status, body in answers:
        assert status in (200, 201), (request, status, body)
        by_message.setdefault(request.message, []).append((request, status, body))
    first: dict[str, dict[str, Any]] = {}
    for message in journey.messages:
        got = by_message[message.id]
        fresh = [body for _, status, body in got if not body["duplicate"]]
        assert len(fresh) == 1, (message, got)  # exactly one copy made an event
        for _, status, body in got:
            assert body["event_id"] == fresh[0]["event_id"], (message, got)
            assert {**body, "duplicate": False} == fresh[0], (message, got)
            assert status == (200 if body["duplicate"] else 201), (message, got)
        first[message.id] = fresh[0]
    event_ids = [first[m.id]["event_id"] for m in journey.messages]
    assert len(set(event_ids)) == len(journey.messages)  # repeats are not duplicates

    events = await whole_stream(live)
    kinds = Counter(e["type"].removeprefix("helpline.") for e in events)
    inbound = {e["id"]: e for e in events if e["type"] == "helpline.message.inbound.v1"}
    assert kinds["message.inbound.v1"] == len(inbound) == len(journey.messages)
    assert set(inbound) == set(event_ids)
    for message in journey.messages:  # every written form normalized to its canonical handle
        data = inbound[first[message.id]["event_id"]]["data"]
        got_sender = {k: data["from"].get(k) for k in ("email", "phone", "visitor_id")}
        assert got_sender == sender_of(message), (message, data["from"])
    copies = len(journey.requests) - len(journey.messages)
    suppressed = sum(body["duplicate"] for _, _, body in answers)
    assert suppressed == copies

    # (b), (c) The contacts helpline ended with, against ground truth and the evidence.
    now = await survivors(live, {body["contact_id"] for body in first.values()})
    actual = {m: now[body["contact_id"]] for m, body in first.items()}
    truth = journey.truth()
    model = expected_contacts(journey.messages)
    vs_truth = pair_scores(actual, truth)
    vs_evidence = pair_scores(actual, model.contact_of)
    ideal_recall = pair_scores(model.contact_of, truth).recall
    # Suggestions come from handle claims (the model predicts them) or from the same long text
    # from an anonymous visitor and someone else (helpline's near-duplicate index).
    suggestions = [e for e in events if e["type"] == "helpline.contact.link_suggested.v1"]
    by_text = sum(e["data"]["reason"] == ANONYMOUS_REASON for e in suggestions)
    elapsed = time.monotonic() - started
    print(  # noqa: T201
        f"\njourneys seed={journey.seed} customers={len(journey.customers)}"
        f" messages={len(journey.messages)} requests={len(journey.requests)}"
        f" duplicates_suppressed={suppressed}/{copies}"
        f" contacts={len(set(actual.values()))}"
        f" precision={vs_truth.precision:.4f} recall_vs_truth={vs_truth.recall:.4f}"
        f" recall_vs_evidence={vs_evidence.recall:.4f} (evidence allows {ideal_recall:.4f})"
        f" link_suggestions={len(suggestions) - by_text} (+{by_text} by same text)"
        f" merges={kinds['contact.merged.v1']} claims={len(journey.claims)}"
        f" seconds={elapsed:.1f} (sending {sending:.1f})"
    )
    assert false_merges(actual, truth) == {}
    assert vs_truth.precision == 1.0
    assert vs_evidence.recall == 1.0
    assert vs_evidence.precision == 1.0  # nothing joined that the rules do not allow either
    assert kinds["contact.merged.v1"] == model.merges
    assert len(suggestions) - by_text == model.suggestions
