"""Errors the core raises for input it refuses; each edge translates them (HTTP 4xx, SMTP 5xx)."""

from __future__ import annotations


class InvalidInput(ValueError):
    """A field of the input is wrong in a way the sender must fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different body."""


class NotFound(LookupError):
    """The named conversation, contact or event does not exist."""
