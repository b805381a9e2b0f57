"""structlog setup: JSON lines for journald in service mode, readable lines in a terminal.

Every event is a name plus key-values (event, conversation and connector ids
as keys), and values under secret-looking keys never reach the output.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

_SECRET_WORDS = ("token", "secret", "password", "authorization", "credential")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Whether a log field's name says it holds a secret; the same few keys recur on every
    line, so the verdict is remembered."""
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith(
        ("_path", "_file", "_name")
    )


def redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in event:
        if _secret_key(key):
            event[key] = "[redacted]"
    return event


def configure(fmt: str = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
