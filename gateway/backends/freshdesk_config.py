"""The `[backends.NAME]` keys of the Freshdesk backend, checked when the config loads.

Freshdesk codes (status, priority, source) are plain integers an admin can extend with
custom values, so they are configurable with the documented codes as defaults
(backends.md §6.2). The webhook keys exist because Freshdesk signs nothing: a shared
secret header and/or Basic auth is all that tells its automation call from anyone's.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from gateway.config_types import Secret
from gateway.delivery.settings import DeliverySection

# helpline channel → Freshdesk ticket `source` (1 Email, 2 Portal, 3 Phone, 7 Chat).
DEFAULT_SOURCES = {"email": 1, "webform": 2, "chat": 7, "voice": 3, "api": 2}
CHANNELS = frozenset(DEFAULT_SOURCES)
ReplyKind = Literal["reply", "public_note"]


def _both_kinds() -> list[ReplyKind]:
    return ["reply", "public_note"]


class FreshdeskConfig(DeliverySection):
    """A Freshdesk account (API v2) as a helpline backend."""

    # The account's address, e.g. "https://acme.freshdesk.com" (/api/v2 is added).
    url: str
    # An API key (Profile settings → API key) of the agent helpline writes as.
    api_key: Secret
    # The single-line text ticket field holding helpline's conversation id (its API name).
    marker_field: str = "cf_helpline_cid"
    # Ticket status codes: a new or reopened conversation, and a resolved one.
    status_open: int = Field(default=2, ge=2)
    status_resolved: int = Field(default=4, ge=2)
    # Priority of new tickets: 1 Low, 2 Medium, 3 High, 4 Urgent.
    priority: int = Field(default=1, ge=1, le=4)
    # Tags set on every new ticket (automation rules and notifications can key on them).
    tags: list[str] = Field(default_factory=lambda: ["helpline"])
    # Group new tickets are assigned to; None leaves it to Freshdesk's dispatch rules.
    group_id: int | None = Field(default=None, ge=1)
    # Ticket `source` per helpline channel; channels left out keep the defaults.
    sources: dict[str, int] = Field(default_factory=dict)
    # How an answer sent through helpline (not typed in Freshdesk) is recorded on the ticket:
    # a public note by the API agent, or a private one. Never a Freshdesk reply, which
    # Freshdesk would email to the customer a second time.
    agent_messages: Literal["public_note", "private_note"] = "public_note"
    # Give contacts helpline creates unique_external_id = helpline's contact id (needs the
    # account's "unique external ID" feature; turn off if Freshdesk refuses the field).
    contact_external_id: bool = True
    # What an agent writes in Freshdesk that helpline sends to the customer.
    reply_kinds: list[ReplyKind] = Field(default_factory=_both_kinds, min_length=1)
    # The automation webhook's custom header and its secret value (compared in constant time).
    webhook_header: str = "X-Helpline-Token"
    webhook_secret: Secret | None = None
    # Basic auth the webhook must carry, instead of or together with the header.
    webhook_user: str | None = None
    webhook_password: Secret | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the url must start with https:// (http:// only for tests)")
        return value.rstrip("/").removesuffix("/api/v2")

    @field_validator("marker_field")
    @classmethod
    def _custom_field(cls, value: str) -> str:
        if not value.startswith("cf_") or len(value) < 4:
            raise ValueError('a ticket custom field is named "cf_<name>", e.g. "cf_helpline_cid"')
        return value

    @field_validator("sources")
    @classmethod
    def _channels(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - CHANNELS)
        if unknown:
            raise ValueError(
                f"unknown channel {unknown[0]!r} (one of {', '.join(sorted(CHANNELS))})"
            )
        if any(code < 1 for code in value.values()):
            raise ValueError("a Freshdesk source code is a positive integer")
        return value

    @field_validator("webhook_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not value or any(c in value for c in " :\r\n"):
            raise ValueError("a header name has no spaces or colons")
        return value

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        if (self.webhook_user is None) != (self.webhook_password is None):
            raise ValueError("webhook_user and webhook_password go together")
        if self.status_open == self.status_resolved:
            raise ValueError("status_open and status_resolved must differ")
        return self

    @property
    def hook_enabled(self) -> bool:
        """Agent replies are taken only when the webhook can be told from a stranger's call."""
        return self.webhook_secret is not None or self.webhook_password is not None

    def source_of(self, channel: str) -> int:
        return self.sources.get(channel) or DEFAULT_SOURCES.get(channel, 2)
