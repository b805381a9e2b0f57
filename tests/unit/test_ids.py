import re

import pytest

from gateway import ids
from gateway.ids import new_id

CROCKFORD = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")


def test_ids_are_crockford_and_sort_by_time() -> None:
    ids = [new_id("evt", ms) for ms in (0, 1, 2**20, 2**40, 2**48 - 1)]
    assert all(CROCKFORD.match(i) for i in ids)
    assert ids == sorted(ids)
    assert new_id("evt", 5)[:13] == new_id("evt", 5)[:13]  # 9 characters of pure time


def test_ids_do_not_repeat() -> None:
    assert len({new_id("evt") for _ in range(10_000)}) == 10_000


def test_ids_have_the_ulid_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    # The time part of the ULID spec's example id (1469918176385 ms), then the 80 random
    # bits in order: the top half all ones, the bottom half all zeros.
    monkeypatch.setattr(ids, "_random80", lambda: (2**40 - 1, 0))
    assert new_id("evt", 1469918176385) == "evt_01ARYZ6S41ZZZZZZZZ00000000"
