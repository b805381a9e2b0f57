"""Check stream events against the published schemas (docs/schemas/<type>.json).

Any test that reads the stream can call `validate_event` on what it got, so
the documented contract is checked against real output everywhere, not only
in the docs tests.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def _is_rfc3339(value: object) -> bool:
    """RFC 3339 date-time, checked here so the result does not depend on optional packages."""
    if not isinstance(value, str):
        return True  # "type" says whether a non-string is allowed
    match = _RFC3339.match(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, 59 if second == 60 else second)
    except ValueError:
        return False
    offset = match.group(8)
    return offset in "Zz" or (int(offset[1:3]) < 24 and int(offset[4:6]) < 60)


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    checker.checks("date-time")(_is_rfc3339)
    return checker


@functools.cache
def _validators() -> dict[str, Draft202012Validator]:
    checker = _format_checker()
    found = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        found[path.name.removesuffix(".json")] = Draft202012Validator(
            schema, format_checker=checker
        )
    if not found:
        raise AssertionError(f"no event schemas in {SCHEMA_DIR}")
    return found


def known_types() -> list[str]:
    """The event types that have a published schema."""
    return sorted(_validators())


def validate_event(event: dict[str, Any]) -> None:
    """Raise AssertionError, naming every mismatch, unless `event` matches its type's schema."""
    if not isinstance(event, dict):
        raise AssertionError(f"a stream event is a JSON object, not {type(event).__name__}")
    event_type = event.get("type")
    validator = _validators().get(event_type) if isinstance(event_type, str) else None
    if validator is None:
        raise AssertionError(
            f"event {event.get('id')!r} has type {event_type!r}, which has no schema in "
            f"{SCHEMA_DIR} (known: {', '.join(known_types())})"
        )
    errors = sorted(validator.iter_errors(event), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [
            f"  at /{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
            for error in errors
        ]
        raise AssertionError(
            f"event {event.get('id')!r} (offset {event.get('offset')!r}) does not match "
            f"docs/schemas/{event_type}.json:\n" + "\n".join(lines)
        )
