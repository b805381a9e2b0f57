"""Handle normalization: one person's handles compare equal however they are written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InvalidInput
from gateway.identity import normalize_email, normalize_phone, normalize_visitor


@pytest.mark.parametrize(
    "written", ["030 1234567", "+49 30 1234567", "0049-30-1234567", "+49 (30) 123-4567"]
)
def test_one_number_however_written(written: str) -> None:
    assert normalize_phone(written, "DE") == "+49301234567"


def test_national_numbers_need_a_default_region() -> None:
    with pytest.raises(InvalidInput, match="default_region"):
        normalize_phone("030 1234567", None)


@pytest.mark.parametrize("withheld", ["anonymous", "Unknown", "<unknown>", "restricted", " "])
def test_withheld_caller_ids_never_become_handles(withheld: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_phone(withheld, "DE")


def test_emails_are_compared_case_insensitively() -> None:
    assert normalize_email("  Ann.Lee@Example.COM ") == "ann.lee@example.com"


@pytest.mark.parametrize(
    "bad",
    [
        "ann",
        "@example.com",
        "ann@",
        "ann@localhost",
        "a b@x.org",
        "ann@.example.com",
        "x" * 250 + "@example.com",
    ],
)
def test_bad_emails_are_refused_with_the_field(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_email(bad, "from.email")
    assert info.value.field == "from.email"


def test_visitor_ids() -> None:
    assert normalize_visitor(" v-123 ") == "v-123"
    with pytest.raises(InvalidInput):
        normalize_visitor("bad\x00id")


emails = st.emails().filter(lambda e: len(e) <= 254 and "." in e.rpartition("@")[2])


@given(emails)
def test_email_normalization_is_idempotent(email: str) -> None:
    once = normalize_email(email)
    assert normalize_email(once) == once
    assert normalize_email(email.upper()) == once


@given(st.integers(min_value=2_000_000, max_value=99_999_999))
def test_phone_normalization_is_idempotent_and_format_blind(subscriber: int) -> None:
    national = f"030 {subscriber}"
    try:
        once = normalize_phone(national, "DE")
    except InvalidInput:
        return  # not a possible German number: nothing to compare
    assert normalize_phone(once, None) == once
    assert normalize_phone(f"0049 30 {subscriber}", None) == once
    assert normalize_phone(f"+49-30-{subscriber}", "US") == once
