"""Which inbound mail earns an automatic acknowledgement, as the smtp_out connector decides
before the core checks the address (failing, once per window)."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.mail.acks import acknowledgement_for, check_template, render

CONV = "conv_01J0ZQ3M9V8S2R4T6W8Y0A2C4E"


def event(kind: str, event_id: str, **data: Any) -> dict[str, Any]:
    return {"type": f"helpline.{kind}", "id": event_id, "data": {"conversation_id": CONV, **data}}


def inbound(event_id: str = "evt_in", **data: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "channel": "email",
        "from": {"email": "ann@example.org"},
        "recipients": ["support@example.com"],
        "subject": "Re: Printer on fire",
        "conversation_number": 7,
        "accepted_at": "2026-11-22T08:00:00.000Z",
    }
    return event("message.inbound.v1", event_id, **{**fields, **data})


OPENED = event("conversation.opened.v1", "evt_open", channel="email")


def decide(message: dict[str, Any], events: list[dict[str, Any]]) -> str:
    ack, why = acknowledgement_for(
        message,
        events,
        own={"noreply@example.com"},
        text="Your reference is {ticket}: {subject}",
        window=86400,
        source="/connectors/out",
        ticket="[#HL-7]",
    )
    if ack is None:
        return why
    assert ack.address == "ann@example.org" and ack.conversation_id == CONV
    assert ack.text == "Your reference is [#HL-7]: Printer on fire"
    assert ack.received_at == 1795334400.0
    return "acknowledge"


def test_the_first_mail_of_a_conversation_it_opened_is_acknowledged() -> None:
    message = inbound()
    assert decide(message, [OPENED, message]) == "acknowledge"


def test_mail_joining_or_reopening_a_conversation_is_not() -> None:
    earlier, message = inbound("evt_first"), inbound()
    assert decide(message, [OPENED, earlier, message]) == "not a new conversation"
    reopened = event("conversation.reopened.v1", "evt_re", channel="email")
    assert decide(message, [reopened, message]) == "not a new conversation"
    by_api = event("conversation.opened.v1", "evt_open", channel="api")
    assert decide(message, [by_api, message]) == "not a new conversation"


def test_our_own_addresses_a_dmarc_fail_and_an_answered_one_are_not() -> None:
    for sender in ("support@example.com", "noreply@example.com"):
        message = inbound(**{"from": {"email": sender}})
        assert "helpline's own" in decide(message, [OPENED, message])
    forged = inbound(sender_auth="dmarc=fail")
    assert decide(forged, [OPENED, forged]) == "the sender failed DMARC"
    message = inbound()
    answer = event("message.outbound.v1", "evt_out", internal=False)
    assert decide(message, [OPENED, message, answer]) == "an agent answered already"
    note = event("message.outbound.v1", "evt_note", internal=True)
    assert decide(message, [OPENED, message, note]) == "acknowledge"


def test_templates() -> None:
    assert render("Re: {subject} {ticket}", subject="AW: Re: Frage [#HL-7]", ticket="[#HL-7]") == (
        "Re: Frage [#HL-7]"
    )
    assert check_template("{{literal}} {ticket}", required=("ticket",))
    with pytest.raises(ValueError, match="must contain"):
        check_template("{subject}", required=("ticket",))
