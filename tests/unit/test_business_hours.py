"""Business hours as a support lead sees them: nights, weekends, holidays and DST days."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.business_hours import (
    ALWAYS,
    DAYS,
    MAX_CLOSED_DAYS,
    BusinessTime,
    Calendar,
    CalendarConfig,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
H = timedelta(hours=1)
M = timedelta(minutes=1)
US = timedelta(microseconds=1)


def calendar(zone: str, *holidays: str, **days: list[str]) -> Calendar:
    return Calendar.from_config(
        CalendarConfig.model_validate({"timezone": zone, "holidays": list(holidays), **days})
    )


def weekdays(*intervals: str) -> dict[str, list[str]]:
    return {day: list(intervals) for day in DAYS[:5]}


OFFICE = calendar("Europe/Berlin", "2026-12-24", "2026-12-25", **weekdays("09:00-17:00"))
LUNCH = calendar("Europe/Berlin", **weekdays("09:00-12:30", "13:30-17:00"))
ALL_SUNDAY = calendar("Europe/Berlin", sunday=["00:00-24:00"])
EARLY_SUNDAY = calendar("Europe/Berlin", sunday=["01:00-04:00"])
NY_ALL_SUNDAY = calendar("America/New_York", sunday=["00:00-24:00"])
NY_EARLY_SUNDAY = calendar("America/New_York", sunday=["01:00-04:00"])


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN)  # type: ignore[arg-type,misc]


# --- what a support lead notices ---------------------------------------------------------


def test_friday_evening_to_monday_morning_is_one_hour() -> None:
    friday, monday = berlin(2026, 6, 5, 16, 30), berlin(2026, 6, 8, 9, 30)
    assert friday.strftime("%a") == "Fri"
    assert OFFICE.elapsed(friday, monday) == H
    assert OFFICE.add(friday, H) == monday


def test_a_gap_of_closed_time_counts_nothing() -> None:
    assert OFFICE.elapsed(berlin(2026, 6, 6, 10), berlin(2026, 6, 7, 18)) == timedelta(0)
    assert OFFICE.elapsed(berlin(2026, 6, 5, 17), berlin(2026, 6, 8, 9)) == timedelta(0)
    assert OFFICE.elapsed(berlin(2026, 6, 9, 18), berlin(2026, 6, 10, 8, 59)) == timedelta(0)


def test_holidays_inside_a_span_are_skipped() -> None:
    # Wednesday 16:00 to Monday 10:00; Thursday 24th and Friday 25th are holidays.
    assert OFFICE.elapsed(berlin(2026, 12, 23, 16), berlin(2026, 12, 28, 10)) == 2 * H
    assert OFFICE.add(berlin(2026, 12, 23, 16), 90 * M) == berlin(2026, 12, 28, 9, 30)
    assert not OFFICE.is_open(berlin(2026, 12, 24, 10))


def test_lunch_break_is_not_counted() -> None:
    monday = (2026, 6, 8)
    assert LUNCH.elapsed(berlin(*monday, 12), berlin(*monday, 14)) == H
    assert LUNCH.elapsed(berlin(*monday), berlin(*monday) + timedelta(days=1)) == 7 * H
    assert LUNCH.add(berlin(*monday, 12), H) == berlin(*monday, 14)
    assert not LUNCH.is_open(berlin(*monday, 13))
    assert LUNCH.is_open(berlin(*monday, 13, 30))
    assert not LUNCH.is_open(berlin(*monday, 17))


def test_ordinary_days_around_a_dst_change_stay_eight_hours() -> None:
    before, after = berlin(2026, 3, 27), berlin(2026, 3, 30)  # Friday, Monday
    assert OFFICE.elapsed(before, before + timedelta(days=1)) == 8 * H
    assert OFFICE.elapsed(after, after + timedelta(days=1)) == 8 * H
    assert OFFICE.elapsed(berlin(2026, 3, 27, 16), berlin(2026, 3, 30, 10)) == 2 * H


@pytest.mark.parametrize(
    ("cal", "zone", "spring", "autumn"),
    [
        (ALL_SUNDAY, BERLIN, date(2026, 3, 29), date(2026, 10, 25)),
        (NY_ALL_SUNDAY, NEW_YORK, date(2026, 3, 8), date(2026, 11, 1)),
    ],
)
def test_whole_dst_sundays_are_23_and_25_hours(
    cal: Calendar, zone: ZoneInfo, spring: date, autumn: date
) -> None:
    def day(d: date) -> tuple[datetime, datetime]:
        start = datetime(d.year, d.month, d.day, tzinfo=zone)
        return start, datetime.combine(d + timedelta(days=1), start.timetz())

    assert cal.elapsed(*day(spring)) == 23 * H
    assert cal.elapsed(*day(autumn)) == 25 * H
    assert cal.elapsed(*day(spring - timedelta(days=7))) == 24 * H
    start, end = day(autumn)
    assert cal.add(start, 25 * H) == end
    assert cal.add(start, 24 * H) < end


@pytest.mark.parametrize(
    ("cal", "zone", "spring", "autumn"),
    [
        (EARLY_SUNDAY, BERLIN, date(2026, 3, 29), date(2026, 10, 25)),
        (NY_EARLY_SUNDAY, NEW_YORK, date(2026, 3, 8), date(2026, 11, 1)),
    ],
)
def test_intervals_straddling_the_change_have_their_real_length(
    cal: Calendar, zone: ZoneInfo, spring: date, autumn: date
) -> None:
    def whole(d: date) -> timedelta:
        start = datetime(d.year, d.month, d.day, tzinfo=zone)
        return cal.elapsed(start, start.astimezone(UTC) + timedelta(days=2))

    assert whole(spring) == 2 * H  # 01:00-02:00, then the clock shows 03:00-04:00
    assert whole(autumn) == 4 * H  # the hour from 01:00 (zone-dependent) is lived twice
    assert whole(spring + timedelta(days=7)) == 3 * H
    # Both occurrences of the repeated hour are open.
    repeated = datetime(autumn.year, autumn.month, autumn.day, 1, 30, tzinfo=zone)
    if zone is BERLIN:
        repeated = repeated.replace(hour=2, minute=30)
    assert cal.is_open(repeated)
    assert cal.is_open(repeated.replace(fold=1))


def test_gap_and_fold_conventions() -> None:
    # 02:30 does not exist on 2026-03-29 in Berlin: it means the jump (03:00 CEST).
    gap_start = calendar("Europe/Berlin", sunday=["02:30-04:00"])
    spring, autumn = berlin(2026, 3, 29), berlin(2026, 10, 25)
    assert gap_start.elapsed(spring, spring + timedelta(days=1)) == H
    assert gap_start.add(spring, 30 * M) == berlin(2026, 3, 29, 3, 30)
    inside_gap = calendar("Europe/Berlin", sunday=["02:00-02:30", "10:00-11:00"])
    assert inside_gap.elapsed(spring, spring + timedelta(days=1)) == H
    # 02:30 happens twice on 2026-10-25: the first one opens, so 2.5 real hours.
    assert gap_start.elapsed(autumn, autumn + timedelta(days=1)) == 150 * M
    assert gap_start.is_open(berlin(2026, 10, 25, 2, 15).replace(fold=1))
    assert not gap_start.is_open(berlin(2026, 10, 25, 2, 15))
    # Lord Howe Island moves its clock by 30 minutes, at 02:00.
    howe = ZoneInfo("Australia/Lord_Howe")
    small = calendar("Australia/Lord_Howe", sunday=["01:30-02:15"])
    for day, length in ((5, 75 * M), (4, 30 * M), (11, 45 * M)):
        start = datetime(2026, 4 if day == 5 else 10, day, tzinfo=howe)
        assert small.elapsed(start, start + timedelta(days=1)) == length


def test_intervals_may_end_at_midnight_and_join_the_next_day() -> None:
    night = calendar("Europe/Berlin", monday=["22:00-24:00"], tuesday=["00:00-06:00"])
    monday, tuesday = berlin(2026, 6, 8, 23), berlin(2026, 6, 9, 1)
    assert night.elapsed(monday, tuesday) == 2 * H
    assert night.elapsed(berlin(2026, 6, 8), berlin(2026, 6, 10)) == 8 * H
    assert night.is_open(berlin(2026, 6, 9))
    assert night.is_open(berlin(2026, 6, 8, 23, 59, 59, 999999))
    assert night.add(monday, 2 * H) == tuesday
    assert night.add(berlin(2026, 6, 9, 5), H) == berlin(2026, 6, 9, 6)  # not next Monday


def test_the_zone_of_the_arguments_does_not_matter() -> None:
    start, end = berlin(2026, 3, 27, 16, 30), berlin(2026, 3, 30, 9, 30)
    expected = OFFICE.elapsed(start, end)
    for zone in (UTC, ZoneInfo("Asia/Tokyo"), NEW_YORK):
        assert OFFICE.elapsed(start.astimezone(zone), end.astimezone(zone)) == expected
        result = OFFICE.add(start.astimezone(zone), expected)
        assert result == end
        assert result.tzinfo is zone
    assert expected == H


def test_zero_amount_and_empty_spans() -> None:
    saturday = berlin(2026, 6, 6, 12)
    assert OFFICE.add(saturday, timedelta(0)) is saturday
    assert OFFICE.elapsed(saturday, saturday - H) == timedelta(0)
    # Adding exactly the rest of a day ends at closing, not at the next opening.
    assert OFFICE.add(berlin(2026, 6, 5, 9), 8 * H) == berlin(2026, 6, 5, 17)


def test_naive_datetimes_and_negative_amounts_are_refused() -> None:
    naive, aware = datetime(2026, 6, 8, 10), berlin(2026, 6, 8, 10)
    for cal in (OFFICE, ALWAYS):
        with pytest.raises(ValueError, match="no time zone"):
            cal.elapsed(naive, aware)
        with pytest.raises(ValueError, match="no time zone"):
            cal.elapsed(aware, naive)
        with pytest.raises(ValueError, match="no time zone"):
            cal.add(naive, H)
        with pytest.raises(ValueError, match="no time zone"):
            cal.is_open(naive)
        with pytest.raises(ValueError, match="negative"):
            cal.add(aware, -US)


def test_years_of_holidays_are_searched_through_but_not_forever() -> None:
    mondays = [date(2026, 1, 5) + timedelta(weeks=n) for n in range(5 * 53)]
    rare = calendar("UTC", *(d.isoformat() for d in mondays), monday=["09:00-10:00"])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first_open = datetime.combine(mondays[-1] + timedelta(weeks=1), datetime.min.time(), UTC)
    assert rare.add(start, 30 * M) == first_open + timedelta(hours=9, minutes=30)
    eleven_years = [date(2026, 1, 5) + timedelta(weeks=n) for n in range(MAX_CLOSED_DAYS // 7 + 2)]
    never = calendar("UTC", *(d.isoformat() for d in eleven_years), monday=["09:00-10:00"])
    with pytest.raises(ValueError, match=f"no opening time in {MAX_CLOSED_DAYS} consecutive"):
        never.add(start, M)
    assert never.elapsed(start, start + timedelta(days=3600)) == timedelta(0)


def test_a_calendar_without_opening_hours_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one opening interval"):
        Calendar(BERLIN, [[] for _ in range(7)])


# --- against a minute-by-minute wall-clock oracle ----------------------------------------


def _wall_oracle(cfg: CalendarConfig, at: datetime) -> bool:
    local = at.astimezone(ZoneInfo(cfg.timezone))
    if local.date() in cfg.holidays:
        return False
    minute = local.hour * 60 + local.minute
    return any(a <= minute < b for a, b in cfg.week()[local.weekday()])


@pytest.mark.parametrize(
    ("config", "first_day"),
    [
        (
            {
                "timezone": "Europe/Berlin",
                **weekdays("09:00-12:30", "13:30-17:00"),
                "sunday": ["01:00-04:00", "23:00-24:00"],
                "saturday": ["00:00-24:00"],
                "holidays": ["2026-03-30"],
            },
            date(2026, 3, 27),
        ),
        (
            {"timezone": "Europe/Berlin", "sunday": ["00:30-03:30"], "monday": ["08:00-09:00"]},
            date(2026, 10, 24),
        ),
        # Santiago changes its clocks at midnight.
        (
            {
                "timezone": "America/Santiago",
                "saturday": ["20:00-24:00"],
                "sunday": ["00:00-03:00"],
            },
            date(2026, 4, 3),
        ),
        (
            {
                "timezone": "America/Santiago",
                "saturday": ["20:00-24:00"],
                "sunday": ["00:00-03:00"],
            },
            date(2026, 9, 4),
        ),
    ],
)
def test_agrees_with_counting_minutes_on_the_wall_clock(
    config: dict[str, Any], first_day: date
) -> None:
    cfg = CalendarConfig.model_validate(config)
    cal = Calendar.from_config(cfg)
    start = datetime.combine(first_day, datetime.min.time(), UTC)
    counted = timedelta(0)
    for minute in range(4 * 24 * 60):
        at = start + minute * M
        if minute % 97 == 0:
            assert cal.elapsed(start, at) == counted
        open_now = _wall_oracle(cfg, at)
        assert cal.is_open(at) == open_now, at
        counted += M if open_now else timedelta(0)
    assert cal.add(start, counted) <= start + 4 * 24 * H


# --- properties -------------------------------------------------------------------------

CALENDARS: list[BusinessTime] = [
    OFFICE,
    LUNCH,
    EARLY_SUNDAY,
    NY_EARLY_SUNDAY,
    calendar("Europe/Berlin", sunday=["02:30-04:00"], wednesday=["00:00-24:00"]),
    calendar("America/Santiago", saturday=["20:00-24:00"], sunday=["00:00-03:00"]),
    calendar("Australia/Lord_Howe", "2026-10-05", **weekdays("01:30-02:15", "09:00-17:00")),
    ALWAYS,
]
instants = st.datetimes(
    min_value=datetime(2025, 12, 1), max_value=datetime(2027, 6, 30), timezones=st.just(UTC)
).map(lambda at: at.astimezone(st_zone(at)))
amounts = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=45))
calendars = st.sampled_from(CALENDARS)
props = settings(max_examples=200, deadline=None)


def utc(at: datetime) -> datetime:
    # Arithmetic and comparison of two datetimes sharing a ZoneInfo use the wall clock.
    return at.astimezone(UTC)


def st_zone(at: datetime) -> ZoneInfo:
    """Present instants in assorted zones, chosen by the microsecond so it stays reproducible."""
    zones = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")
    return ZoneInfo(zones[at.microsecond % len(zones)])


@props
@given(calendars, instants, instants, instants)
def test_elapsed_is_additive(cal: BusinessTime, x: datetime, y: datetime, z: datetime) -> None:
    a, b, c = sorted((x, y, z), key=utc)
    assert cal.elapsed(a, c) == cal.elapsed(a, b) + cal.elapsed(b, c)
    assert cal.elapsed(a, c) <= utc(c) - utc(a)


@props
@given(calendars, instants, amounts)
def test_add_is_the_exact_and_earliest_inverse(
    cal: BusinessTime, start: datetime, amount: timedelta
) -> None:
    end = cal.add(start, amount)
    assert utc(end) >= utc(start)
    assert end.tzinfo is start.tzinfo
    assert cal.elapsed(start, end) == amount
    if amount:
        just_before = utc(end) - US
        assert cal.elapsed(start, just_before) < amount
        assert cal.is_open(just_before)


@props
@given(calendars, instants, instants, instants)
def test_elapsed_grows_with_the_end(
    cal: BusinessTime, start: datetime, x: datetime, y: datetime
) -> None:
    early, late = sorted((x, y), key=utc)
    assert cal.elapsed(start, early) <= cal.elapsed(start, late)


@props
@given(instants, instants, amounts)
def test_always_is_real_time(x: datetime, y: datetime, amount: timedelta) -> None:
    assert ALWAYS.elapsed(x, y) == max(timedelta(0), utc(y) - utc(x))
    assert utc(ALWAYS.add(x, amount)) - utc(x) == amount
    assert ALWAYS.is_open(x)


def test_always_counts_real_time_across_dst_in_one_zone() -> None:
    # Plain subtraction of two Berlin datetimes would say 3 hours.
    assert ALWAYS.elapsed(berlin(2026, 3, 29, 1), berlin(2026, 3, 29, 4)) == 2 * H
    assert ALWAYS.add(berlin(2026, 3, 29, 1), 2 * H) == berlin(2026, 3, 29, 4)


# --- configuration ----------------------------------------------------------------------


def test_config_as_written_in_toml() -> None:
    text = """
    [business_hours.support]
    timezone = "Europe/Berlin"
    monday = ["13:30-17:00", "9:00-12:30"]
    tuesday = ["09:00-12:00", "12:00-17:00"]
    saturday = ["22:00 - 24:00"]
    holidays = ["2026-12-24", 2026-12-25]
    """
    cfg = CalendarConfig.model_validate(tomllib.loads(text)["business_hours"]["support"])
    assert cfg.monday == ["09:00-12:30", "13:30-17:00"]
    assert cfg.saturday == ["22:00-24:00"]
    assert cfg.wednesday == []
    assert cfg.holidays == [date(2026, 12, 24), date(2026, 12, 25)]
    cal = Calendar.from_config(cfg)
    assert cal.zone.key == "Europe/Berlin"
    assert cal.elapsed(berlin(2026, 6, 9, 11), berlin(2026, 6, 9, 13)) == 2 * H  # touching


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ({"timezone": "Europe/Berln"}, ("timezone",), "'Europe/Berln' is not a known IANA time"),
        ({"timezone": "../etc/passwd"}, ("timezone",), "is not a known IANA time zone"),
        ({"monday": ["25:00-26:00"]}, ("monday", 0), "25:00 is not a time of day"),
        ({"monday": ["09:60-10:00"]}, ("monday", 0), "09:60 is not a time of day"),
        ({"monday": ["24:00-24:00"]}, ("monday", 0), "24:00 is not a time of day"),
        ({"friday": ["8-17"]}, ("friday", 0), "'8-17': write an interval as 'HH:MM-HH:MM'"),
        (
            {"tuesday": ["09:00-12:00", "17:00-09:00"]},
            ("tuesday", 1),
            "'17:00-09:00': the end must be after the start (a shift past midnight is two "
            "intervals: '22:00-24:00' on one day and '00:00-06:00' on the next)",
        ),
        ({"monday": ["09:00-09:00"]}, ("monday", 0), "the end must be after the start"),
        (
            {"monday": ["11:00-13:00", "09:00-12:00"]},
            ("monday",),
            "'09:00-12:00' and '11:00-13:00' overlap",
        ),
        ({"holidays": ["2026-13-01"]}, ("holidays", 0), "'2026-13-01' is not a date"),
        ({"holidays": ["24.12.2026"]}, ("holidays", 0), "write YYYY-MM-DD"),
        ({"holidays": [datetime(2026, 12, 24, 9)]}, ("holidays", 0), "is not a date"),
        ({"holidays": [20261224]}, ("holidays", 0), "is not a date"),
        ({"monday": []}, (), "a calendar needs at least one opening interval"),
        ({"mondays": ["09:00-17:00"]}, ("mondays",), "Extra inputs are not permitted"),
    ],
)
def test_config_errors_say_what_is_wrong(
    change: dict[str, Any], where: tuple[str | int, ...], message: str
) -> None:
    raw: dict[str, Any] = {"timezone": "Europe/Berlin", "monday": ["09:00-17:00"], **change}
    with pytest.raises(ValidationError) as caught:
        CalendarConfig.model_validate(raw)
    errors = caught.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"] == where
    assert message in errors[0]["msg"]
