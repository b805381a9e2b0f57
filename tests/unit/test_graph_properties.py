"""The identity graph's union of handles does not depend on the order of the evidence."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import CoreConfig
from gateway.contact_graph import Evidence
from gateway.identity import Handles
from gateway.ingest import Inbound, Ingestor
from gateway.metrics import Metrics
from gateway.store.sqlite import SqliteStore

TRUSTED = Evidence(True, "trusted_api_token")


def handles_of(n: int) -> Handles:
    """Handle n as an email (even) or a phone number (odd), so pairs mix kinds."""
    if n % 2 == 0:
        return Handles(email=f"h{n}@example.org")
    return Handles(phone=f"+4930{5550000 + n}")


def pair(a: int, b: int) -> Handles:
    one, two = handles_of(a), handles_of(b)
    return Handles(email=one.email or two.email, phone=one.phone or two.phone)


def components(nodes: int, edges: list[tuple[int, int]]) -> set[frozenset[int]]:
    parent = list(range(nodes))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: dict[int, set[int]] = {}
    for n in range(nodes):
        groups.setdefault(find(n), set()).add(n)
    return {frozenset(g) for g in groups.values()}


async def partition(nodes: int, edges: list[tuple[int, int]], seed: int) -> set[frozenset[int]]:
    folder = Path(tempfile.mkdtemp(prefix="hl-graph-"))
    store = SqliteStore(folder / "db", durability="process")
    await store.open()
    ingestor = Ingestor(store, CoreConfig(), Metrics())
    try:
        # Every handle first writes on its own, so each has a contact with history.
        for n in range(nodes):
            await ingestor.ingest(Inbound("api", "/api/t", handles_of(n), f"hello {n}"))
        shuffled = list(edges)
        random.Random(seed).shuffle(shuffled)
        for a, b in shuffled:
            await ingestor.ingest(Inbound("api", "/api/t", pair(a, b), "both", evidence=TRUSTED))
        owner: dict[int, str] = {}
        for n in range(nodes):
            kind, value = handles_of(n).ordered()[0]
            found = await store.contact_by_handle(kind, value)
            assert found is not None
            owner[n] = found
        groups: dict[str, set[int]] = {}
        for n, contact in owner.items():
            groups.setdefault(contact, set()).add(n)
        return {frozenset(g) for g in groups.values()}
    finally:
        await store.close()
        shutil.rmtree(folder, ignore_errors=True)


# Edges only between an even (email) and an odd (phone) handle: a message carries one of each.
edges = st.lists(
    st.tuples(st.integers(0, 5).map(lambda x: 2 * x), st.integers(0, 5).map(lambda x: 2 * x + 1)),
    max_size=10,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(links=edges, seed_a=st.integers(0, 1000), seed_b=st.integers(0, 1000))
def test_trusted_merges_give_the_components_whatever_the_order(
    links: list[tuple[int, int]], seed_a: int, seed_b: int
) -> None:
    expected = components(12, links)
    first = asyncio.run(partition(12, links, seed_a))
    second = asyncio.run(partition(12, links, seed_b))
    assert first == second == expected
