"""The `backends` benchmark's client processes, and the harness's handles on a run's processes.

    python -m bench.backends ingest --url URL --count N [--warmup W] [--rate R]
        [--connections C] --tag T --out FILE      (token in HELPLINE_BENCH_TOKEN)
    python -m bench.backends post --url URL --count N [--warmup W] [--rate R]
        [--connections C] --size BYTES --tag T --out FILE

`ingest` POSTs messages to the daemon's /v1/messages (each from its own
customer); `post` POSTs CloudEvent-shaped bodies straight to the sink (the bare
client). Both pace an open loop at --rate, or run --connections workers flat
out with rate 0, and write one JSON result. The harness side: `run_client`
spawns one of them pinned, and the sink's /stats and the daemon's
/v1/backends/bench are polled here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.daemon import RunningDaemon
from bench.procs import BenchError, Child, child_env, http_get, pinned, spawn, wait_exit

BACKEND = "bench"
INBOUND = "helpline.message.inbound.v1"
TOKEN_ENV = "HELPLINE_BENCH_TOKEN"
LATE_MS = 50.0  # a paced request started this long after its slot is counted

# -- the client processes ---------------------------------------------------------------

FIRST = ("Anna", "Ben", "Chiara", "Dmitri", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas")
LAST = ("Schmidt", "Okafor", "Rossi", "Ivanova", "Yilmaz", "Haddad", "Lee", "Tanaka", "Costa")
TEXT = (
    "Hello, I ordered item {k} on the 3rd and it still has not arrived. The tracking page "
    "says the parcel left the warehouse but nothing has changed for four days now. Could "
    "you check what happened and tell me when I can expect it? My customer number is "
    "{tag}-{k}. Thank you, {name}"
)


def message_body(tag: str, k: int) -> bytes:
    """Message k of run `tag`: its own customer (a new contact, a new conversation)."""
    name = f"{FIRST[k % len(FIRST)]} {LAST[(k * 7) % len(LAST)]}"
    return orjson.dumps(
        {
            "from": {"email": f"user{tag}.{k}@example{k % 97}.com", "name": name},
            "subject": f"Order {tag}-{k} has not arrived",
            "text": TEXT.format(k=k, tag=tag, name=name),
        }
    )


def event_body(tag: str, k: int, size: int) -> bytes:
    """A CloudEvent-shaped body of `size` bytes stamped now (µs): what the bare client sends."""
    now = datetime.now(UTC).isoformat()
    event: dict[str, Any] = {
        "offset": k + 1,
        "specversion": "1.0",
        "id": f"evt_{tag}_{k:08d}",
        "type": INBOUND,
        "source": "/bench",
        "time": now,
        "data": {"accepted_at": now, "text": ""},
    }
    pad = size - len(orjson.dumps(event))
    event["data"]["text"] = "x" * max(0, pad)
    return orjson.dumps(event)


async def _drive(
    one: Callable[[int], Coroutine[Any, Any, None]], total: int, rate: float, connections: int
) -> list[int]:
    """Request k for k in 0..total-1: paced open loop at `rate` (k due at start + k / rate),
    or, with rate 0, `connections` workers one request after the other. The late ones."""
    late: list[int] = []
    if rate <= 0:
        counter = iter(range(total))

        async def worker() -> None:
            for k in counter:
                await one(k)

        await asyncio.gather(*(worker() for _ in range(connections)))
        return late
    start = time.monotonic() + 0.1
    tasks: list[asyncio.Task[None]] = []
    for k in range(total):
        due = start + k / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif -wait * 1000 > LATE_MS:
            late.append(k)
        tasks.append(asyncio.create_task(one(k)))
    await asyncio.gather(*tasks)
    return late


async def _client(args: argparse.Namespace) -> dict[str, object]:
    import aiohttp  # the harness itself needs no aiohttp client

    total = args.warmup + args.count
    rows: list[list[object]] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=max(args.connections, 1))
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"Content-Type": "application/json"}
    if args.mode == "ingest":
        headers["Authorization"] = f"Bearer {os.environ[TOKEN_ENV]}"
    else:  # the same header names the webhook backend sends, without computing a signature
        headers["webhook-timestamp"] = str(int(time.time()))
        headers["webhook-signature"] = "v1," + "A" * 44
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:

        async def one(k: int) -> None:
            if args.mode == "ingest":
                body = message_body(args.tag, k)
                extra = {"Idempotency-Key": f"{args.tag}-{k}"}
            else:
                body = event_body(args.tag, k, args.size)
                extra = {"webhook-id": f"evt_{args.tag}_{k:08d}"}
            sent, clock = time.time(), time.perf_counter()
            try:
                async with session.post(args.url, data=body, headers=extra) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as err:
                errors.append(f"{k}: {type(err).__name__} {err}")
                rows.append([k, sent, None, 0, None, k < args.warmup])
                return
            rtt = time.perf_counter() - clock
            offset = None
            if args.mode == "ingest" and status == 201:
                offset = orjson.loads(raw).get("offset")
            elif args.mode == "post":
                offset = k + 1
            rows.append([k, sent, rtt, status, offset, k < args.warmup])

        started = time.monotonic()
        late = await _drive(one, total, args.rate, args.connections)
        elapsed = time.monotonic() - started
    return {"rows": rows, "errors": errors[:20], "late": len(late), "elapsed": elapsed}


def client_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the backends benchmark's client processes")
    parser.add_argument("mode", choices=("ingest", "post"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0: flat out")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--size", type=int, default=1000, help="post: body bytes")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(_client(args))
    Path(args.out).write_bytes(orjson.dumps(result))


# -- the harness side: a client spawned, the sink and the daemon polled -------------------


def _get_json(url: str, token: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback only
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback only
        data = orjson.loads(resp.read())
    if not isinstance(data, dict):
        raise BenchError(f"{url} answered {data!r}")
    return data


def backend_view(daemon: RunningDaemon) -> dict[str, Any]:
    return _get_json(f"{daemon.base_url}/v1/backends/{BACKEND}", daemon.token)


def sink_stats(port: int, records: bool = False) -> dict[str, Any]:
    status, body = http_get(f"http://127.0.0.1:{port}/stats{'?records=1' if records else ''}", 10)
    data = orjson.loads(body)
    if status != 200 or not isinstance(data, dict):
        raise BenchError(f"the sink's /stats answered {status}")
    return data


def wait_received(port: int, count: int, timeout: float, sink: Child) -> dict[str, Any]:
    """Poll the sink until it has received `count` requests (the run's completion)."""
    until = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < until:
        stats = sink_stats(port)
        if int(stats["count"]) >= count:
            return stats
        if not sink.alive():
            break
        time.sleep(0.1)
    raise BenchError(
        f"the sink received {stats.get('count')} of {count} requests within {timeout:.0f} s"
    )


def wait_lag_zero(daemon: RunningDaemon, delivered: int, timeout: float = 30.0) -> dict[str, Any]:
    """GET /v1/backends/bench until lag_events is 0 and `delivered` are counted finished."""
    until = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < until:
        view = backend_view(daemon)
        if view.get("lag_events") == 0 and int(view.get("delivered", 0)) >= delivered:
            return view
        time.sleep(0.05)
    return view


def run_client(
    work: Path, mode: str, core: int | None, *, token: str = "", timeout: float, **options: object
) -> dict[str, Any]:
    """One client process (this module's `ingest` or `post`), pinned; its JSON result."""
    out = work / f"{mode}.json"
    args = [sys.executable, "-m", "bench.backends", mode, "--out", str(out)]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    env = child_env()
    if token:
        env[TOKEN_ENV] = token
    child = spawn(f"the {mode} client", pinned(args, core), work / f"{mode}.log", env=env)
    try:
        wait_exit(child, timeout)
    finally:
        child.stop(5)
    data = orjson.loads(out.read_bytes())
    out.unlink()
    if not isinstance(data, dict):
        raise BenchError(f"the {mode} client wrote {data!r}")
    return data
