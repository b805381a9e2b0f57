"""The `backends` benchmark's fake helpdesk: answers every POST with 204 after a fixed delay.

Run as its own process, pinned like the other load-side processes:

    python -m bench.backend_sink --port PORT --delay SECONDS

For each POST it records the time the request reached the handler (wall
clock, `time.time()`, the clock the daemon stamps `accepted_at` with), the
event's `offset` and its `data.accepted_at` (or the CloudEvent `time` when the
event has none), then waits `delay` (0: answers at once; 0.2: a slow helpdesk)
and answers 204. The body is parsed with orjson and the timestamps are only
converted when the harness asks for them, so the sink stays far from being
the bottleneck.

It does NOT verify the Standard Webhooks signature: the daemon still signs
every request (HMAC-SHA256 over the body), and that cost is part of what the
benchmark measures on helpline's side; checking it here would only slow the
sink, which the bare-client baseline runs against too.

`GET /stats` answers the count, bytes, distinct offsets, first and last receipt
and the time the sink started listening; `GET /stats?records=1` adds every
request as `[received, offset, accepted]` (epoch seconds; accepted null when
the body had no timestamp).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson
from aiohttp import web

from bench.procs import Child, pinned, spawn, wait_ready


class Records:
    """Every POST the sink took: (received, offset, raw timestamp string or None)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.rows: list[tuple[float, int, str | None]] = []
        self.bytes = 0
        self.bad = 0  # bodies that were not a JSON object with an offset
        self.listening_at = 0.0

    async def post(self, request: web.Request) -> web.Response:
        received = time.time()
        body = await request.read()
        self.bytes += len(body)
        try:
            event = orjson.loads(body)
            data = event.get("data")
            stamp = data.get("accepted_at") if isinstance(data, dict) else None
            self.rows.append((received, int(event["offset"]), stamp or event.get("time")))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            self.bad += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.Response:
        rows = self.rows
        answer: dict[str, object] = {
            "count": len(rows),
            "distinct": len({offset for _, offset, _ in rows}),
            "bytes": self.bytes,
            "bad": self.bad,
            "delay": self.delay,
            "listening_at": self.listening_at,
            "first": rows[0][0] if rows else None,
            "last": max(r[0] for r in rows) if rows else None,
        }
        if request.query.get("records"):
            answer["records"] = [[r, o, _epoch(s)] for r, o, s in rows]
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


async def serve(port: int, delay: float) -> None:
    records = Records(delay)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/stats", records.stats)
    app.router.add_post("/{tail:.*}", records.post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    records.listening_at = time.time()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await runner.cleanup()
    print(f"received {len(records.rows)}", flush=True)


def start_sink(work_dir: Path, port: int, delay: float, core: int | None) -> Child:
    """The sink as its own process pinned to `core`, once GET /stats answers."""
    cmd = [sys.executable, "-m", "bench.backend_sink", "--port", str(port), "--delay", str(delay)]
    child = spawn("fake backend sink", pinned(cmd, core), work_dir / f"sink-{port}.log")
    try:
        wait_ready(child, f"http://127.0.0.1:{port}/stats", deadline=20.0)
    except BaseException:
        child.stop()
        raise
    return child


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each 204")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay))


if __name__ == "__main__":
    main()
