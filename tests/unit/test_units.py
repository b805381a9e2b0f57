import pytest

from gateway.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("3h", 10800),
        ("7d", 604800),
        ("2w", 1209600),
        (45, 45),
        (1.5, 1.5),
        ("10", 10),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-3s", "", "1y", True, None, -1])
def test_bad_durations_say_how_to_write_one(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1MiB", 1048576), ("64KiB", 65536), ("25MB", 25_000_000), (100, 100), ("7B", 7)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["1 megabyte", "1.5MiB", "-1", 2.5, False])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)
