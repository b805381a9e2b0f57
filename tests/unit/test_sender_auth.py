"""DMARC verdicts are read only from Authentication-Results of trusted hosts."""

from __future__ import annotations

import pytest

from connectors.mail.sender_auth import dmarc_verdict

TRUSTED = frozenset({"mx.example.com"})


def raw(*results: str) -> bytes:
    fields = "".join(f"Authentication-Results: {r}\r\n" for r in results)
    return (fields + "From: ann@customer.example\r\nSubject: x\r\n\r\nbody\r\n").encode()


@pytest.mark.parametrize(
    ("results", "verdict"),
    [
        (["mx.example.com; dmarc=pass (p=none dis=none) header.from=customer.example"], "pass"),
        (
            [
                "mx.example.com 1; spf=pass smtp.mailfrom=customer.example;\r\n"
                " dmarc=fail (p=reject) header.from=customer.example"
            ],
            "fail",
        ),
        (["mx.example.com; dmarc=none header.from=customer.example"], None),
        # Someone wrote a pass into the mail; only the trusted host's field counts.
        (
            [
                "evil.example; dmarc=pass header.from=customer.example",
                "mx.example.com; dmarc=fail header.from=customer.example",
            ],
            "fail",
        ),
        (["evil.example; dmarc=pass header.from=customer.example"], None),
        # A pass for another domain than the From shown is no pass for it.
        (["mx.example.com; dmarc=pass header.from=other.example"], "fail"),
        ([], None),
    ],
)
def test_verdicts(results: list[str], verdict: str | None) -> None:
    assert dmarc_verdict(raw(*results), "ann@customer.example", TRUSTED) == verdict


def test_nothing_is_believed_without_a_trusted_host() -> None:
    message = raw("mx.example.com; dmarc=pass header.from=customer.example")
    assert dmarc_verdict(message, "ann@customer.example", frozenset()) is None
