"""Business hours: how much opening time lies between two instants, and the inverse.

First-response times may be counted only while a team is at work: a calendar
has a time zone, weekly opening hours and holidays. Opening hours are wall-clock
times in the calendar's zone, but durations are real time, so each day's local
interval bounds are turned into UTC instants and real durations are summed; a
09:00-17:00 day is 8 hours, or 7 or 9 when a DST change falls inside it.

Local times that are not unambiguous (the convention, in one place):
- a time in a spring-forward gap (02:30 on a day the clock jumps 02:00 -> 03:00)
  means the instant of the jump, so "02:00-02:30" is empty that day and
  "02:30-04:00" opens when the clock shows 03:00;
- a time that occurs twice (fall-back) means its first occurrence (fold=0), so
  "02:30-04:00" runs from the first 02:30 to 04:00, which includes the repeated
  02:00-02:30 as well: 2.5 real hours.
Whole-day and straddling intervals ("00:00-24:00", "01:00-04:00") therefore have
the real length of the day: 23 or 25 hours, 2 or 4 hours.

Instants are handled as integer microseconds since the Unix epoch, so results
are exact to the microsecond; `ALWAYS` counts plain real time for channels
without business hours, so callers need not special-case them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Annotated, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, field_validator, model_validator

from gateway.config_types import Section

DAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_CLOSED_DAYS: Final = 3660
"""add() gives up after this many consecutive days without opening time (about ten years)."""

_INTERVAL = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH: Final = datetime(1970, 1, 1)  # naive UTC: arithmetic on it never consults a zone
_US: Final = timedelta(microseconds=1)
_DAY_MINUTES: Final = 24 * 60
_MEMO_LIMIT: Final = 100_000

Minutes = tuple[int, int]
"""A local opening interval as minutes after midnight, end exclusive (end may be 1440)."""
Span = tuple[int, int]
"""Opening instants as microseconds since the Unix epoch, end exclusive."""


def parse_interval(text: str) -> Minutes:
    """Minutes of an "HH:MM-HH:MM" interval; the end may be 24:00, and must follow the start."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(f"{text!r}: write an interval as 'HH:MM-HH:MM', like '09:00-17:00'")
    sh, sm, eh, em = (int(g) for g in match.groups())
    for hour, minute, is_end in ((sh, sm, False), (eh, em, True)):
        if minute > 59 or hour > 24 or (hour == 24 and (minute or not is_end)):
            raise ValueError(
                f"{text!r}: {hour:02d}:{minute:02d} is not a time of day "
                "(00:00 to 23:59; an end may also be 24:00)"
            )
    start, end = sh * 60 + sm, eh * 60 + em
    if end <= start:
        raise ValueError(
            f"{text!r}: the end must be after the start (a shift past midnight is two "
            "intervals: '22:00-24:00' on one day and '00:00-06:00' on the next)"
        )
    return start, end


def _normal_interval(text: str) -> str:
    start, end = parse_interval(text)
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def _parse_holiday(value: object) -> date:
    # datetime is a subclass of date: a holiday with a time of day is a mistake.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError as err:
            raise ValueError(f"{value!r} is not a date: {err}") from err
    raise ValueError(f"{value!r} is not a date: write YYYY-MM-DD, like '2026-12-24'")


Interval = Annotated[str, AfterValidator(_normal_interval)]
Holiday = Annotated[date, BeforeValidator(_parse_holiday)]


class CalendarConfig(Section):
    """One `[business_hours.NAME]` table: zone, opening hours per weekday, holidays."""

    timezone: str
    monday: list[Interval] = []
    tuesday: list[Interval] = []
    wednesday: list[Interval] = []
    thursday: list[Interval] = []
    friday: list[Interval] = []
    saturday: list[Interval] = []
    sunday: list[Interval] = []
    holidays: list[Holiday] = []

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"{value!r} is not a known IANA time zone; write a name like "
                "'Europe/Berlin', 'America/New_York' or 'UTC'"
            ) from None
        return value

    @field_validator(*DAYS)
    @classmethod
    def _no_overlap(cls, value: list[str]) -> list[str]:
        ordered = sorted(value, key=parse_interval)
        for before, after in pairwise(ordered):
            if parse_interval(after)[0] < parse_interval(before)[1]:
                raise ValueError(f"{before!r} and {after!r} overlap")
        return ordered

    @model_validator(mode="after")
    def _some_opening(self) -> CalendarConfig:
        if not any(getattr(self, day) for day in DAYS):
            raise ValueError("a calendar needs at least one opening interval")
        return self

    def week(self) -> list[list[Minutes]]:
        """Opening intervals in minutes for Monday (index 0) to Sunday."""
        return [[parse_interval(text) for text in getattr(self, day)] for day in DAYS]


def _micros(at: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (ValueError if naive)."""
    offset = at.utcoffset()
    if offset is None:
        raise ValueError(f"{at.isoformat()} has no time zone: business time needs instants")
    return (at.replace(tzinfo=None) - offset - _EPOCH) // _US


def _instant(micros: int, like: datetime) -> datetime:
    """The instant as an aware datetime in the zone of `like`."""
    return (_EPOCH + timedelta(microseconds=micros)).replace(tzinfo=UTC).astimezone(like.tzinfo)


class BusinessTime(Protocol):
    """What timers and reports need: a `Calendar` or `ALWAYS`."""

    def elapsed(self, start: datetime, end: datetime) -> timedelta: ...
    def add(self, start: datetime, amount: timedelta) -> datetime: ...
    def is_open(self, at: datetime) -> bool: ...


class RealTime:
    """Plain real time: every instant is open (channels without business hours)."""

    __slots__ = ()

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        # Computed in UTC: subtracting two datetimes that share a ZoneInfo gives
        # wall-clock time, which is an hour off across a DST change.
        return timedelta(microseconds=max(0, _micros(end) - _micros(start)))

    def add(self, start: datetime, amount: timedelta) -> datetime:
        if amount < timedelta(0):
            raise ValueError("cannot add a negative amount of business time")
        return _instant(_micros(start) + amount // _US, start)

    def is_open(self, at: datetime) -> bool:
        _micros(at)
        return True

    def __repr__(self) -> str:
        return "ALWAYS"


ALWAYS: Final = RealTime()


class Calendar:
    """Weekly opening hours and holidays in one zone; computes exact business time.

    Immutable from the outside; it memoises each day's opening instants, which
    reports ask for again and again.
    """

    __slots__ = ("_days", "_holidays", "_week", "_zone")

    def __init__(
        self, zone: ZoneInfo, week: Sequence[Iterable[Minutes]], holidays: Iterable[date] = ()
    ) -> None:
        if len(week) != 7:
            raise ValueError("a week has seven days, Monday first")
        self._zone = zone
        self._week = tuple(_merge(day) for day in week)
        self._holidays = frozenset(holidays)
        self._days: dict[int, tuple[tuple[Span, ...], int]] = {}
        if not any(self._week):
            raise ValueError("a calendar needs at least one opening interval")

    @classmethod
    def from_config(cls, cfg: CalendarConfig) -> Calendar:
        return cls(ZoneInfo(cfg.timezone), cfg.week(), cfg.holidays)

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    @property
    def holidays(self) -> frozenset[date]:
        return self._holidays

    def __repr__(self) -> str:
        return f"Calendar({self._zone.key!r}, {len(self._holidays)} holidays)"

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Business time from start to end (zero if end is not after start)."""
        lo, hi = _micros(start), _micros(end)
        if hi <= lo:
            return timedelta(0)
        total = 0
        first = start.astimezone(self._zone).toordinal() - 1
        last = end.astimezone(self._zone).toordinal() + 1
        for ordinal in range(first, last + 1):
            spans, day_total = self._day(ordinal)
            if not day_total:
                continue
            if lo <= spans[0][0] and spans[-1][1] <= hi:
                total += day_total
                continue
            for a, b in spans:
                total += max(0, min(b, hi) - max(a, lo))
        return timedelta(microseconds=total)

    def add(self, start: datetime, amount: timedelta) -> datetime:
        """The earliest instant at which `amount` of business time has elapsed since start.

        For a zero amount that is start itself, open or closed. The result is in
        start's time zone. ValueError if the amount is negative or if the search
        meets MAX_CLOSED_DAYS consecutive days without opening time.
        """
        if amount < timedelta(0):
            raise ValueError("cannot add a negative amount of business time")
        lo, remaining = _micros(start), amount // _US
        if not remaining:
            return start
        ordinal = start.astimezone(self._zone).toordinal() - 1
        closed = 0
        while closed < MAX_CLOSED_DAYS:
            spans, day_total = self._day(ordinal)
            closed = 0 if day_total else closed + 1
            for a, b in spans:
                begin = max(a, lo)
                if begin >= b:
                    continue
                if remaining <= b - begin:
                    return _instant(begin + remaining, start)
                remaining -= b - begin
            ordinal += 1
        raise ValueError(
            f"no opening time in {MAX_CLOSED_DAYS} consecutive days after "
            f"{date.fromordinal(ordinal - MAX_CLOSED_DAYS)}: check the holidays"
        )

    def is_open(self, at: datetime) -> bool:
        """Whether the instant lies in an opening interval (start included, end excluded)."""
        now = _micros(at)
        ordinal = at.astimezone(self._zone).toordinal()
        return any(a <= now < b for day in (-1, 0, 1) for a, b in self._day(ordinal + day)[0])

    def _day(self, ordinal: int) -> tuple[tuple[Span, ...], int]:
        """The day's opening intervals as UTC microseconds, and their total."""
        cached = self._days.get(ordinal)
        if cached is not None:
            return cached
        day = date.fromordinal(ordinal)
        spans: list[Span] = []
        if day not in self._holidays:
            for start, end in self._week[day.weekday()]:
                a, b = self._local(day, start), self._local(day, end)
                if a < b:  # empty when it lies wholly in a spring-forward gap
                    spans.append((a, b))
        result = (tuple(spans), sum(b - a for a, b in spans))
        if len(self._days) >= _MEMO_LIMIT:
            self._days.clear()
        self._days[ordinal] = result
        return result

    def _local(self, day: date, minute: int) -> int:
        """Microseconds of a local wall time: first occurrence if repeated, the jump if skipped."""
        wall = datetime.combine(day, time()) + timedelta(minutes=minute)
        early = wall.replace(tzinfo=self._zone).utcoffset()
        late = wall.replace(tzinfo=self._zone, fold=1).utcoffset()
        if early is None or late is None:  # never for a ZoneInfo; keeps the types honest
            raise ValueError(f"{self._zone.key} gives no UTC offset for {wall}")
        if early >= late:  # unambiguous, or repeated: fold=0 is the first occurrence
            return (wall - early - _EPOCH) // _US
        # In a gap: the zone is at `early` before the jump and at `late` after it,
        # and the jump lies between these two readings; find its second.
        before = (wall - late - _EPOCH) // timedelta(seconds=1)
        after = (wall - early - _EPOCH) // timedelta(seconds=1)
        while after - before > 1:
            mid = (before + after) // 2
            if datetime.fromtimestamp(mid, self._zone).utcoffset() == early:
                before = mid
            else:
                after = mid
        return after * 1_000_000


def _merge(intervals: Iterable[Minutes]) -> tuple[Minutes, ...]:
    """Sorted, with touching or overlapping intervals joined ("09:00-12:00" + "12:00-13:00")."""
    merged: list[Minutes] = []
    for start, end in sorted(intervals):
        if not 0 <= start < end <= _DAY_MINUTES:
            raise ValueError(f"{start}-{end} is not an interval of minutes within a day")
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)
