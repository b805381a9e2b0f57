"""Ingest under concurrency: random interleavings of duplicates, conflicts and new messages.

Each example runs a real store (SQLite file, grouped commits) with many
ingests in flight at once and a follower reading the stream as it is written.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ack import Ack
from gateway.config import CoreConfig
from gateway.dedup import IdempotencyKey, digest_of
from gateway.errors import IdempotencyConflict
from gateway.identity import Handles
from gateway.ingest import Inbound, Ingestor
from gateway.metrics import Metrics
from gateway.store.sqlite import SqliteStore
from gateway.stream import StreamNotifier, StreamReader

# (key number, body variant, customer number): few keys, so repeats and conflicts are common.
operations = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 1), st.integers(0, 5)), min_size=1, max_size=60
)


def _item(key: int, variant: int, customer: int) -> Inbound:
    text = f"message {key} variant {variant}"
    return Inbound(
        channel="api",
        source="/api/test",
        handles=Handles(email=f"c{customer}@example.org"),
        text=text,
        idempotency=IdempotencyKey("api:test", f"k{key}", digest_of(text.encode())),
    )


async def _run(ops: list[tuple[int, int, int]], seed: int, max_batch: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="hl-prop-"))
    notifier = StreamNotifier()
    store = SqliteStore(folder / "db", max_batch=max_batch, on_commit=notifier.committed)
    await store.open()
    reader = StreamReader(store, notifier)
    ingestor = Ingestor(store, CoreConfig(), Metrics())
    rng = random.Random(seed)
    done = asyncio.Event()
    followed: list[int] = []

    async def follow() -> None:
        after = 0
        while True:
            rows = await reader.read(after, rng.randint(1, 7))
            for offset, _ in rows:
                assert offset > after, "a follower saw an offset at or below one it had seen"
                followed.append(offset)
                after = offset
            if not rows:
                if done.is_set() and after >= reader.head:
                    return
                await reader.wait(after, 0.05)

    async def send(op: tuple[int, int, int]) -> Ack | IdempotencyConflict:
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        try:
            return await ingestor.ingest(_item(*op))
        except IdempotencyConflict as err:
            return err

    try:
        follower = asyncio.create_task(follow())
        results = await asyncio.gather(*(send(op) for op in ops))
        done.set()
        await asyncio.wait_for(follower, 10)

        stream = await store.read_stream(0, 100_000)
        offsets = [offset for offset, _ in stream]
        assert offsets == sorted(set(offsets)), "offsets must strictly increase"
        assert followed == offsets, "the follower must see every event, in order, once"

        inbound = [orjson.loads(body) for _, body in stream]
        inbound = [e for e in inbound if e["type"] == "helpline.message.inbound.v1"]
        texts = [e["data"]["text"] for e in inbound]
        keys = [t.split()[1] for t in texts]
        assert len(keys) == len(set(keys)), "each idempotency key appears once in the stream"
        assert set(keys) == {str(op[0]) for op in ops}

        by_key: dict[int, str] = {}
        for op, result in zip(ops, results, strict=True):
            winner = next(e for e in inbound if e["data"]["text"].split()[1] == str(op[0]))
            if isinstance(result, IdempotencyConflict):
                assert winner["data"]["text"] != f"message {op[0]} variant {op[1]}"
                continue
            assert result.event_id == winner["id"]
            assert by_key.setdefault(op[0], result.event_id) == result.event_id
            if not result.duplicate:
                assert winner["data"]["text"] == f"message {op[0]} variant {op[1]}"
    finally:
        await store.close()
        shutil.rmtree(folder, ignore_errors=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, seed=st.integers(0, 2**32), max_batch=st.sampled_from([1, 3, 256]))
def test_concurrent_ingest_is_idempotent_and_ordered(
    ops: list[tuple[int, int, int]], seed: int, max_batch: int
) -> None:
    asyncio.run(_run(ops, seed, max_batch))
