"""The webhook backend against a Standard Webhooks consumer, over real sockets."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest

from gateway.backends.standard_webhooks import headers_for, secret_key
from tests.conftest import LiveDaemon, message, until
from tests.fakes.harness import Status
from tests.fakes.webhook_consumer import SECRET, WebhookConsumer


def backend(url: str, **over: Any) -> str:
    keys = {
        "type": '"webhook"',
        "url": f'"{url}/hook"',
        "secret": f'"{SECRET}"',
        "retry_base": '"50ms"',
        "retry_cap": '"2s"',
        "timeout": '"2s"',
    }
    keys.update(
        {
            k: v if isinstance(v, str) and v.startswith(('"', "[")) else str(v).lower()
            for k, v in over.items()
        }
    )
    return "[backends.hook]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


@pytest.fixture
def consumer() -> Any:
    with WebhookConsumer() as fake:
        yield fake


async def test_each_event_arrives_signed_with_its_id_and_the_stream_body(
    make_daemon: Any, consumer: WebhookConsumer
) -> None:
    live: LiveDaemon = await make_daemon(backend(consumer.url))
    for n in range(3):
        status, _, _ = await live.post("/v1/messages", message(n))
        assert status == 201
    stream = await live.stream()
    await until(lambda: len(consumer.received) >= len(stream))
    assert consumer.bad_signatures == 0
    # the same CloudEvent, offset included; only per conversation is the order promised
    assert sorted(consumer.events(), key=lambda e: e["offset"]) == stream
    assert sorted(consumer.ids()) == sorted(e["id"] for e in stream)
    for got in consumer.received:
        assert abs(got.timestamp - time.time()) < 30


async def test_a_new_backend_starts_now_and_a_restart_resumes(
    make_daemon: Any, consumer: WebhookConsumer
) -> None:
    first: LiveDaemon = await make_daemon()
    await first.post("/v1/messages", message(1))
    state = first.daemon.state_dir
    await first.daemon.stop()
    second: LiveDaemon = await make_daemon(backend(consumer.url), state_dir=state)
    await second.post("/v1/messages", message(2))
    await until(lambda: len(consumer.received) >= 2)
    texts = [e["data"].get("text") for e in consumer.events()]
    assert "Hello, this is question number 1." not in texts
    assert "Hello, this is question number 2." in texts
    await second.daemon.stop()
    delivered = len(consumer.received)
    third: LiveDaemon = await make_daemon(backend(consumer.url), state_dir=state)
    await third.post("/v1/messages", message(3))
    await until(lambda: len(consumer.received) >= delivered + 2)
    ids = consumer.ids()
    assert len(ids) == len(set(ids)), "a restart sent an event again"


async def test_throttled_and_failing_answers_are_retried_with_the_same_id(
    make_daemon: Any, consumer: WebhookConsumer
) -> None:
    consumer.arm(Status(429, {"error": "slow down"}, {"Retry-After": "1"}))
    consumer.arm(Status(503, {"error": "busy"}))
    live: LiveDaemon = await make_daemon(backend(consumer.url, types='["helpline.message.*"]'))
    await live.post("/v1/messages", message(1))
    await until(lambda: len(consumer.received) == 1, timeout=10)
    tries = consumer.recorded("POST", "^/hook$")
    assert [t.status for t in tries] == [429, 503, 204]
    ids = {t.headers["webhook-id"] for t in tries}
    assert ids == {consumer.received[0].webhook_id}
    assert tries[1].at - tries[0].at >= 0.95, "a request was sent within Retry-After"
    await until(lambda: live.daemon.board.engine("hook").stats.delivered == 1)  # committed
    _, view, _ = await live.get("/v1/backends/hook")
    assert view["retries"] == 2 and view["delivered"] == 1 and view["state"] == "running"


async def test_a_refused_event_is_parked_and_its_conversation_goes_on(
    make_daemon: Any, consumer: WebhookConsumer
) -> None:
    live: LiveDaemon = await make_daemon(backend(consumer.url, types='["helpline.message.*"]'))
    consumer.arm(Status(400, {"error": "schema"}))
    _, first, _ = await live.post("/v1/messages", message(1))
    await until(lambda: bool(consumer.recorded("POST")))
    _, second, _ = await live.post(
        "/v1/messages", message(1, text="A second question, same conversation.")
    )
    await until(lambda: len(consumer.received) == 1)
    assert consumer.received[0].event["id"] == second["event_id"]

    status, listed, _ = await live.get("/v1/backends/hook/dead-letters")
    assert status == 200
    [letter] = listed["dead_letters"]
    assert letter["event_id"] == first["event_id"] and letter["status"] == 400
    assert "schema" in letter["error"]
    _, shown, _ = await live.get(f"/v1/backends/hook/dead-letters/{letter['offset']}")
    assert shown["event"]["id"] == first["event_id"]
    _, detail, _ = await live.get(f"/v1/conversations/{first['conversation_id']}")
    assert [d["offset"] for d in detail["dead_letters"]] == [letter["offset"]]
    await until(lambda: live.daemon.board.engine("hook").stats.queued == 0)  # committed
    _, view, _ = await live.get("/v1/backends/hook")
    assert view["dead_letters"] == 1 and view["lag_events"] == 0

    status, body, _ = await live.post(
        f"/v1/backends/hook/dead-letters/{letter['offset']}/replay", {}
    )
    assert status == 202 and body == {"replaying": 1}
    await until(lambda: len(consumer.received) == 2)
    assert consumer.received[1].event["id"] == first["event_id"]
    await until(lambda: _letters(live) == 0)
    _, listed, _ = await live.get("/v1/backends/hook/dead-letters")
    assert listed["dead_letters"] == []
    _, detail, _ = await live.get(f"/v1/conversations/{first['conversation_id']}")
    assert detail["dead_letters"] == []


async def test_order_is_kept_per_conversation_under_concurrent_delivery(
    make_daemon: Any,
) -> None:
    with WebhookConsumer(jitter=0.03) as consumer:
        live: LiveDaemon = await make_daemon(
            backend(consumer.url, concurrency=8, types='["helpline.message.inbound.v1"]')
        )
        for round_ in range(4):
            for n in range(12):
                text = f"customer {n} message {round_}"
                status, _, _ = await live.post("/v1/messages", message(n, text=text))
                assert status == 201
        await until(lambda: len(consumer.received) == 48, timeout=20)
        per_conversation: dict[str, list[int]] = defaultdict(list)
        for event in consumer.events():
            per_conversation[event["data"]["conversation_id"]].append(event["offset"])
        assert len(per_conversation) == 12
        for offsets in per_conversation.values():
            assert offsets == sorted(offsets)
        arrival = [e["offset"] for e in consumer.events()]
        assert arrival != sorted(arrival), "delivery was not concurrent across conversations"


def _signed(
    body: dict[str, Any], webhook_id: str, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps(body)
    stamp = int(at if at is not None else time.time())
    return raw, headers_for([secret_key(SECRET)], webhook_id, stamp, raw)


async def _hook(live: LiveDaemon, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with live.http.post(live.url + "/hooks/hook", data=raw, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_signed_reply_comes_back_once_and_never_to_its_own_backend(
    make_daemon: Any, consumer: WebhookConsumer
) -> None:
    live: LiveDaemon = await make_daemon(backend(consumer.url))
    _, ack, _ = await live.post("/v1/messages", message(1))
    reply = {"conversation_id": ack["conversation_id"], "text": "Fixed it.", "author": "Ann"}

    raw, headers = _signed(reply, "msg_reply1")
    status, first = await _hook(live, raw, headers)
    assert status == 200 and first["duplicate"] is False
    status, again = await _hook(live, raw, headers)  # the vendor's retry, or a replay
    assert status == 200 and again["duplicate"] is True
    assert again["event_id"] == first["event_id"]

    bad = dict(headers, **{"webhook-id": "msg_reply2"})  # signature no longer matches
    status, problem = await _hook(live, raw, bad)
    assert status == 401 and "signature" in problem["detail"]
    raw_old, old = _signed(reply, "msg_reply3", at=time.time() - 3600)
    status, problem = await _hook(live, raw_old, old)
    assert status == 401 and "tolerance" in problem["detail"]

    outbound = [e for e in await live.stream() if e["type"] == "helpline.message.outbound.v1"]
    assert len(outbound) == 1
    assert outbound[0]["source"] == "/backends/hook"
    assert outbound[0]["data"]["author"] == {"kind": "human", "name": "Ann"}
    inbound_id = ack["event_id"]
    await until(lambda: inbound_id in consumer.ids())
    await live.post("/v1/messages", message(2))  # a later event goes through...
    await until(lambda: len(consumer.received) >= 4)
    assert first["event_id"] not in consumer.ids()  # ...but never the backend's own reply


async def test_a_gone_endpoint_stops_delivery_and_a_dead_one_shows_lag(
    make_daemon: Any, consumer: WebhookConsumer
) -> None:
    consumer.arm(Status(410, {"error": "gone"}))
    live: LiveDaemon = await make_daemon(backend(consumer.url))
    await live.post("/v1/messages", message(1))
    await until(lambda: bool(consumer.recorded("POST")))
    await until(lambda: live.daemon.board.engine("hook").stats.state.label == "failed")
    await live.post("/v1/messages", message(2))
    _, ready, _ = await live.get("/readyz", token=None)
    assert ready["status"] == "degraded"
    assert "gone" in ready["components"]["backends.hook"]["last_error"]
    _, view, _ = await live.get("/v1/backends/hook")
    assert view["lag_events"] >= 2 and view["lag_seconds"] >= 0
    assert len(consumer.recorded("POST")) == 1


async def test_the_commands_show_lag_and_work_the_dead_letters(
    make_daemon: Any, consumer: WebhookConsumer
) -> None:
    from tests.conftest import TOKENS
    from tests.integration.test_first_response_report import helpline

    live: LiveDaemon = await make_daemon(backend(consumer.url, types='["helpline.message.*"]'))
    consumer.arm(Status(422, {"error": "unprocessable: no such customer"}))
    _, refused, _ = await live.post("/v1/messages", message(1))
    await until(lambda: _letters(live) == 1)
    target = ["--url", live.url, "--token", TOKENS["main"]]

    code, out, err = await helpline("backends", *target)
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["backend", "type", "state"]
    assert row.split()[:3] == ["hook", "webhook", "running"] and row.split()[-1] == "1"

    code, out, err = await helpline("dead-letters", "list", *target)
    assert code == 0, err
    assert "helpline.message.inbound.v1" in out and "no such customer" in out
    offset = str((await live.stream())[-1]["offset"])
    code, out, err = await helpline("dead-letters", "show", "hook", offset, *target)
    assert code == 0, err
    assert orjson.loads(out)["event"]["id"] == refused["event_id"]

    code, out, err = await helpline("dead-letters", "replay", "hook", offset, *target)
    assert code == 0 and "1 dead letter(s) of hook will be delivered again" in out, err
    await until(lambda: _letters(live) == 0)
    assert refused["event_id"] in consumer.ids()

    code, _, err = await helpline("dead-letters", "show", "hook", offset, *target)
    assert code == 1 and "no dead letter at offset" in err
    code, _, err = await helpline("dead-letters", "drop", "nosuch", "1", *target)
    assert code == 1 and "no backend 'nosuch'" in err
    code, _, err = await helpline("dead-letters", "replay", *target)
    assert code == 2 and "needs the backend's name" in err


def _letters(live: LiveDaemon) -> int:
    import sqlite3

    with sqlite3.connect(live.daemon.store.path) as db:
        return int(db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


async def test_a_backend_down_holds_its_backlog_visibly_and_drains_when_back(
    make_daemon: Any,
) -> None:
    from tests.conftest import free_port

    consumer = WebhookConsumer(port=free_port())  # not listening yet: connections refused
    url = f"http://127.0.0.1:{consumer.port}"
    live: LiveDaemon = await make_daemon(backend(url, types='["helpline.message.inbound.v1"]'))
    for n in range(5):
        status, _, _ = await live.post("/v1/messages", message(n))
        assert status == 201  # intake never waits for a backend

    async def view() -> dict[str, Any]:
        return dict((await live.get("/v1/backends/hook"))[1])

    deadline = time.monotonic() + 10
    while (seen := await view())["state"] != "degraded" or seen["lag_events"] < 5:
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.05)
    assert seen["reachable"] is False and "cannot connect" in seen["last_error"]
    _, ready, _ = await live.get("/readyz", token=None)
    assert ready["status"] == "degraded"
    health = ready["components"]["backends.hook"]
    assert health["state"] == "degraded" and health["counters"]["reachable"] == 0
    assert health["counters"]["lag_events"] >= 5 and health["counters"]["delivered"] == 0
    async with live.http.get(live.url + "/metrics") as resp:
        metrics = await resp.text()
    assert 'helpline_backend_reachable{backend="hook"} 0.0' in metrics
    lag = [line for line in metrics.splitlines() if line.startswith("helpline_backend_lag_events")]
    assert lag and float(lag[0].split()[-1]) >= 5

    with consumer:
        await until(lambda: len(consumer.received) == 5, timeout=15)
        deadline = time.monotonic() + 10
        while (seen := await view())["lag_events"] or seen["state"] != "running":
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
    assert seen["dead_letters"] == 0 and seen["reachable"] is True


async def test_the_report_splits_the_wait_at_the_backends_delivery(make_daemon: Any) -> None:
    """Accepted at T, in the backend at T+5 s (it was down until then), answered at T+12 s."""
    from tests.conftest import free_port
    from tests.integration.test_first_response_report import Clock

    clock = Clock()
    start = clock.now
    consumer = WebhookConsumer(port=free_port())  # down at first
    url = f"http://127.0.0.1:{consumer.port}"
    live: LiveDaemon = await make_daemon(
        backend(url, types='["helpline.message.inbound.v1"]'), clock=clock
    )
    _, ack, _ = await live.post("/v1/messages", message(1))
    engine = live.daemon.board.engine("hook")
    await until(lambda: engine is not None and engine.stats.retries >= 1)
    clock.now = start + 5
    with consumer:
        await until(lambda: engine is not None and engine.stats.delivered == 1, timeout=15)
    clock.now = start + 12
    reply = {"text": "Answered.", "author": {"kind": "human", "name": "Ann"}}
    status, _, _ = await live.post(f"/v1/conversations/{ack['conversation_id']}/replies", reply)
    assert status == 201

    async def report() -> dict[str, Any]:
        _, body, _ = await live.get("/v1/reports/first-response?channel=api&since=1d")
        return dict(body["channels"]["api"]["stages"])

    deadline = time.monotonic() + 10
    while (found := await report())["accepted_to_reply"] is None:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)
    assert found["accepted_to_backend"] == {"hook": {"p50": 5.0, "p90": 5.0, "mean": 5.0}}
    assert found["accepted_to_reply"] == {"p50": 12.0, "p90": 12.0, "mean": 12.0}
