"""Handles normalized before they are compared, so one person's handles compare equal.

Email: the domain always lower-cased, the mailbox name too unless its domain
is configured as case-sensitive, and a `+tag` folded away on the configured
providers. Phone: E.164 through libphonenumber with the configured default
region; withheld caller ids are never handles. Display names are never
identity: two customers may share one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import phonenumbers

from gateway.config import SUBADDRESS_DOMAINS, IdentityConfig
from gateway.errors import InvalidInput
from gateway.store import Handle

MAX_HANDLE_LENGTH = 254
WITHHELD = frozenset({"anonymous", "unknown", "<unknown>", "restricted", "withheld", "private"})


def is_withheld(raw: str) -> bool:
    return raw.strip().lower() in WITHHELD or not raw.strip()


@dataclass(frozen=True, slots=True)
class HandleRules:
    default_region: str | None = None
    case_sensitive_domains: frozenset[str] = frozenset()
    subaddress_domains: frozenset[str] = field(
        default_factory=lambda: frozenset(SUBADDRESS_DOMAINS)
    )
    subaddress_separator: str = "+"

    @classmethod
    def from_config(cls, config: IdentityConfig) -> HandleRules:
        return cls(
            default_region=config.default_region,
            case_sensitive_domains=frozenset(config.case_sensitive_domains),
            subaddress_domains=frozenset(config.subaddress_domains),
            subaddress_separator=config.subaddress_separator,
        )

    def email(self, raw: str, field: str = "email") -> str:
        value = raw.strip()
        local, at, domain = value.rpartition("@")
        if (
            not at
            or not local
            or not domain
            or "@" in local.strip('"')
            or any(ch.isspace() for ch in value)
            or "." not in domain
            or domain.startswith(".")
            or domain.endswith(".")
        ):
            raise InvalidInput(field, f"{raw!r} is not an email address")
        if len(value) > MAX_HANDLE_LENGTH:
            raise InvalidInput(field, f"longer than {MAX_HANDLE_LENGTH} characters")
        domain = domain.lower()
        if domain not in self.case_sensitive_domains:
            local = local.lower()
        if domain in self.subaddress_domains:
            base, sep, _tag = local.partition(self.subaddress_separator)
            if sep and base:
                local = base
        return f"{local}@{domain}"

    def phone(self, raw: str, field: str = "phone") -> str:
        text = raw.strip()
        if is_withheld(text):
            raise InvalidInput(field, f"{raw!r} is a withheld caller id, not a phone number")
        if text.startswith("00"):
            text = "+" + text[2:]
        try:
            number = phonenumbers.parse(text, self.default_region)
        except phonenumbers.NumberParseException as err:
            hint = "" if self.default_region else " (no [identity] default_region: write +CC…)"
            raise InvalidInput(field, f"{raw!r} is not a phone number{hint}") from err
        if not phonenumbers.is_possible_number(number):
            raise InvalidInput(field, f"{raw!r} has the wrong number of digits for its country")
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))

    def visitor(self, raw: str, field: str = "visitor_id") -> str:
        value = raw.strip()
        if not value or len(value) > 200 or not value.isprintable():
            raise InvalidInput(field, "a visitor id is 1 to 200 printable characters")
        return value

    def any_handle(self, raw: str, field: str = "handle") -> Handle:
        """A handle written any way (for lookups): an email, a phone number, else a visitor id."""
        if "@" in raw:
            return ("email", self.email(raw, field))
        digits = sum(ch.isdigit() for ch in raw)
        if digits >= 3 and digits * 2 >= len(raw.strip().lstrip("+")):
            return ("phone", self.phone(raw, field))
        return ("visitor", self.visitor(raw, field))


DEFAULT_RULES = HandleRules()


def normalize_email(raw: str, field: str = "email") -> str:
    return DEFAULT_RULES.email(raw, field)


def normalize_phone(raw: str, default_region: str | None, field: str = "phone") -> str:
    return HandleRules(default_region=default_region).phone(raw, field)


def normalize_visitor(raw: str, field: str = "visitor_id") -> str:
    return DEFAULT_RULES.visitor(raw, field)


@dataclass(frozen=True, slots=True)
class Handles:
    """A message's normalized handles, most specific first."""

    email: str | None = None
    phone: str | None = None
    visitor_id: str | None = None

    def ordered(self) -> list[Handle]:
        found: list[Handle] = []
        if self.email:
            found.append(("email", self.email))
        if self.phone:
            found.append(("phone", self.phone))
        if self.visitor_id:
            found.append(("visitor", self.visitor_id))
        return found
