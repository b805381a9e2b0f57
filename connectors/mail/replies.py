"""Every SMTP/LMTP reply helpline sends, named once and shared by the code and its tests."""

from __future__ import annotations

ACCEPTED = "250 2.0.0 Message accepted for delivery"
RECIPIENT_OK = "250 2.1.5 Recipient ok"
NOT_OURS = "550 5.1.1 <{address}>: this server takes mail for its support addresses only"
BAD_RECIPIENT = "501 5.1.3 <{address}>: not a valid mailbox address"
TRY_LATER = "451 4.3.0 Cannot store the message right now, please try again later"
BACKLOG_FULL = "451 4.3.1 Too much mail waiting to be processed, please try again later"
TOO_MANY = "421 4.7.0 Too many connections from your address, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"


def lmtp_accepted(address: str) -> str:
    """LMTP answers once per recipient after DATA, each with its own outcome (RFC 2033)."""
    return f"250 2.1.5 <{address}> accepted"


def lmtp_try_later(address: str) -> str:
    return f"451 4.3.0 <{address}> cannot store the message right now, please try again later"


def lmtp_backlog_full(address: str) -> str:
    return f"451 4.3.1 <{address}> too much mail waiting to be processed, please try again later"
