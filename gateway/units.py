"""Durations and byte sizes as operators write them in the config ("7d", "1MiB").

Both are also accepted as plain numbers (seconds, bytes) so that a generated
config never has to format a string.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "90s", "5m", "3h", "7d"."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a duration: write a number with a unit, "
                "like '500ms', '30s', '5m', '3h', '7d' or '2w'"
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    else:
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '7d'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as an operator would write it: "7d", "90m", "1.5s" (never weeks)."""
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_size(value: object) -> int:
    """Bytes from a number or a string such as "512KiB", "25MB"."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '1MiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a size: write bytes or a number with a unit, "
                "like '64KiB', '10MiB' or '1GB'"
            )
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"]
    else:
        raise ValueError("a size is a number of bytes or a string like '1MiB'")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
