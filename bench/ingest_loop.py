"""The API's ingest path in one process, without HTTP: `python -m bench.ingest_loop N`.

The store, the ingestor and the first-response tracker as the daemon wires them,
fed N messages shaped like bench/messages.lua's (a new sender each, a 50-word
text with its own ids) by 50 concurrent writers, so group commit forms as it does
under wrk. bench/instructions.py runs it under callgrind; run alone it prints the
CPU per message, which on a shared machine is only a rough guide.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from gateway.config import CoreConfig
from gateway.dedup import IdempotencyKey
from gateway.first_response.tracker import FirstResponseTracker
from gateway.identity import Handles
from gateway.ingest import Inbound, Ingestor
from gateway.metrics import Metrics
from gateway.store.sqlite import SqliteStore
from gateway.stream import StreamNotifier

WRITERS = 50
TEXT = (
    "Hello, I ordered item {n} on the 3rd and it still has not arrived. The tracking page "
    "says the parcel left the warehouse but nothing has changed for four days now. "
    "Could you check what happened and tell me when I can expect it? My customer "
    "number is m-{n}. Thank you, {name}"
)
NAMES = ("Anna Schmidt", "Ben Okafor", "Chiara Rossi", "Dmitri Ivanova", "Elif Yilmaz")


def message(n: int) -> Inbound:
    name = NAMES[n % len(NAMES)]
    return Inbound(
        channel="api",
        source="/api/bench",
        handles=Handles(email=f"user{n}@example{n % 97}.com"),
        name=name,
        subject=f"Order {n} has not arrived",
        text=TEXT.format(n=n, name=name),
        idempotency=IdempotencyKey("api:bench", f"msg:h:{n}", b"d" * 32, f"key {n}"),
    )


async def ingest(count: int, state_dir: Path) -> float:
    """Ingest `count` messages; the process CPU seconds they took."""
    core = CoreConfig()
    metrics, notifier = Metrics(), StreamNotifier()
    store = SqliteStore(
        state_dir / "helpline.db", on_commit=notifier.committed, on_batch=metrics.observe_commit
    )
    await store.open()
    tracker = FirstResponseTracker(store, notifier, core, metrics, time.time)
    await tracker.start()
    ingestor = Ingestor(store, core, metrics)
    numbers = iter(range(count))

    async def writer() -> None:
        for n in numbers:
            await ingestor.ingest(message(n))

    started = time.process_time()
    try:
        await asyncio.gather(*(writer() for _ in range(WRITERS)))
        await tracker.tick()  # the tracker has caught up: its work is counted too
    finally:
        await tracker.stop()
        await store.close()
    return time.process_time() - started


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="helpline-ingest-loop-") as state:
        cpu = asyncio.run(ingest(args.count, Path(state)))
    print(f"{args.count} messages, {cpu / args.count * 1e6:.0f} us CPU each")


if __name__ == "__main__":
    main()
