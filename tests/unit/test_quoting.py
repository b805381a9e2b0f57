"""The new text of a reply, apart from its quoted history and signature, in common styles."""

from __future__ import annotations

import pytest

from gateway.quoting import split_reply

CASES = [
    (  # Gmail / Apple Mail, English
        "Still broken, sorry.\n\n"
        "On Mon, 3 Feb 2026 at 10:00, Support <s@x.org> wrote:\n> Try again",
        "Still broken, sorry.",
        "On Mon, 3 Feb 2026 at 10:00, Support <s@x.org> wrote:\n> Try again",
    ),
    (  # Thunderbird, German
        "Geht immer noch nicht.\n\nAm 03.02.26 um 10:00 schrieb Support:\n> Bitte neu starten",
        "Geht immer noch nicht.",
        "Am 03.02.26 um 10:00 schrieb Support:\n> Bitte neu starten",
    ),
    (  # French
        "Merci !\n\nLe lun. 3 févr. 2026 à 10:00, Support <s@x.org> a écrit :\n> Bonjour",
        "Merci !",
        "Le lun. 3 févr. 2026 à 10:00, Support <s@x.org> a écrit :\n> Bonjour",
    ),
    (  # Outlook header block
        "Please call me.\n\nFrom: Support <s@x.org>\nSent: Monday, 3 February 2026 10:00\n"
        "To: Ann\nSubject: RE: Order\n\nWe shipped it.",
        "Please call me.",
        "From: Support <s@x.org>\nSent: Monday, 3 February 2026 10:00\nTo: Ann\n"
        "Subject: RE: Order\n\nWe shipped it.",
    ),
    (  # signature
        "Where is my parcel?\n\n-- \nAnn Lee\nAcme GmbH, Berlin",
        "Where is my parcel?",
        "-- \nAnn Lee\nAcme GmbH, Berlin",
    ),
    (  # an inline reply keeps the customer's own lines
        "> Which order?\nOrder 4711.\n> Since when?\nSince Monday.",
        "Order 4711.\nSince Monday.",
        "> Which order?\n> Since when?",
    ),
    ("Nothing quoted here.\nJust a question.", "Nothing quoted here.\nJust a question.", ""),
]


@pytest.mark.parametrize(("text", "own", "quoted"), CASES)
def test_split_reply(text: str, own: str, quoted: str) -> None:
    assert split_reply(text) == (own, quoted)


def test_nothing_is_lost() -> None:
    for text, _, _ in CASES:
        own, quoted = split_reply(text)
        assert sorted((own + "\n" + quoted).split()) == sorted(text.split())
