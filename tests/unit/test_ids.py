import re

from gateway.ids import new_id

CROCKFORD = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")


def test_ids_are_crockford_and_sort_by_time() -> None:
    ids = [new_id("evt", ms) for ms in (0, 1, 2**20, 2**40, 2**48 - 1)]
    assert all(CROCKFORD.match(i) for i in ids)
    assert ids == sorted(ids)
    assert new_id("evt", 5)[:13] == new_id("evt", 5)[:13]  # 9 characters of pure time


def test_ids_do_not_repeat() -> None:
    assert len({new_id("evt") for _ in range(10_000)}) == 10_000
