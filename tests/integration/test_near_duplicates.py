"""Near duplicates: the same request again is kept but flagged; same text across people hints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.near_duplicates import ANONYMOUS_REASON
from tests.conftest import LiveDaemon, message

ORDER_MAIL = (
    "Hi, my order #4711 has not arrived yet, it was due last Tuesday. "
    "Can you check where it is? Thanks, Ann"
)
ORDER_CHAT = "order 4711 still hasn't arrived, it was due last tuesday, can you check where it is"
LONG = (
    "Since the update on Monday the export button in the reports page does nothing when I "
    "click it, and the scheduled weekly export to our finance team has not been sent either."
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def by(**handles: str) -> dict[str, Any]:
    return {"from": handles}


async def data_of(live: LiveDaemon, event_id: str) -> dict[str, Any]:
    return next(e["data"] for e in await live.stream() if e["id"] == event_id)


async def test_the_same_request_on_another_channel_is_flagged(live: LiveDaemon) -> None:
    ann = by(email="ann@example.org", visitor_id="v-ann")
    _, mail, _ = await live.post("/v1/messages", message(1, text=ORDER_MAIL, **ann))
    _, chat, _ = await live.post(
        "/v1/messages", message(2, text=ORDER_CHAT, **by(visitor_id="v-ann"))
    )
    _, other, _ = await live.post(
        "/v1/messages", message(3, text="Please send me the invoice for March as a PDF", **ann)
    )
    assert chat["conversation_id"] == mail["conversation_id"]
    assert (await data_of(live, chat["event_id"]))["duplicate_of"] == mail["event_id"]
    assert (await data_of(live, other["event_id"]))["duplicate_of"] is None
    assert (await data_of(live, mail["event_id"]))["duplicate_of"] is None


async def test_a_copy_points_at_the_newest_copy_and_beats_a_newer_rewording(
    live: LiveDaemon,
) -> None:
    """A sender repeating one text (a client resending, a monitor's alert) has each repeat
    flagged against the newest copy; an exact copy wins over a newer reworded one."""
    ann = by(email="ann@example.org")
    _, first, _ = await live.post("/v1/messages", message(1, text=LONG, **ann))
    _, second, _ = await live.post("/v1/messages", message(2, text=LONG, **ann))
    _, third, _ = await live.post("/v1/messages", message(3, text=LONG, **ann))
    assert (await data_of(live, second["event_id"]))["duplicate_of"] == first["event_id"]
    assert (await data_of(live, third["event_id"]))["duplicate_of"] == second["event_id"]
    bob = by(email="bob@example.org")
    _, copy, _ = await live.post("/v1/messages", message(4, text=ORDER_MAIL, **bob))
    _, reworded, _ = await live.post("/v1/messages", message(5, text=ORDER_CHAT, **bob))
    _, again, _ = await live.post("/v1/messages", message(6, text=ORDER_MAIL, **bob))
    assert (await data_of(live, reworded["event_id"]))["duplicate_of"] == copy["event_id"]
    assert (await data_of(live, again["event_id"]))["duplicate_of"] == copy["event_id"]


async def test_another_customer_with_the_same_words_is_not_flagged(live: LiveDaemon) -> None:
    await live.post("/v1/messages", message(1, text=ORDER_MAIL, **by(email="ann@example.org")))
    _, bob, _ = await live.post(
        "/v1/messages", message(2, text=ORDER_MAIL, **by(email="bob@example.org"))
    )
    assert (await data_of(live, bob["event_id"]))["duplicate_of"] is None
    types = [e["type"] for e in await live.stream()]
    assert "helpline.contact.link_suggested.v1" not in types  # both identified: no hint


async def test_only_within_the_window(make_daemon: Callable[..., Any]) -> None:
    clock = Clock()
    live = await make_daemon('[near_duplicates]\nwindow = "1h"\n', clock=clock)
    ann = by(email="ann@example.org")
    _, first, _ = await live.post("/v1/messages", message(1, text=ORDER_MAIL, **ann))
    clock.now += 1800
    _, soon, _ = await live.post("/v1/messages", message(2, text=ORDER_CHAT, **ann))
    clock.now += 7200
    _, late, _ = await live.post("/v1/messages", message(3, text=ORDER_MAIL, **ann))
    assert (await data_of(live, soon["event_id"]))["duplicate_of"] == first["event_id"]
    assert (await data_of(live, late["event_id"]))["duplicate_of"] is None
    await live.daemon.sweep()  # the old fingerprints are forgotten: storage stays bounded
    with live.daemon.store._reader as db:  # the table itself: nothing else shows it
        left = db.execute("SELECT count(*) FROM fingerprints").fetchone()[0]
    assert left == 1


async def test_the_same_long_text_from_an_anonymous_visitor_suggests_a_link(
    live: LiveDaemon,
) -> None:
    _, ann, _ = await live.post(
        "/v1/messages", message(1, text=LONG, **by(email="ann@example.org"))
    )
    _, visitor, _ = await live.post("/v1/messages", message(2, text=LONG, **by(visitor_id="v-9")))
    _, again, _ = await live.post(
        "/v1/messages", message(3, text=LONG + " Thanks!", **by(visitor_id="v-9"))
    )
    assert visitor["contact_id"] != ann["contact_id"]  # never merged on words alone
    hints = [e for e in await live.stream() if e["type"] == "helpline.contact.link_suggested.v1"]
    assert len(hints) == 1  # once per pair
    assert hints[0]["data"]["reason"] == ANONYMOUS_REASON
    assert hints[0]["data"]["contact_ids"] == [visitor["contact_id"], ann["contact_id"]]
    assert hints[0]["data"]["cause_event_id"] == visitor["event_id"]
    assert (await data_of(live, again["event_id"]))["duplicate_of"] == visitor["event_id"]


async def test_short_generic_texts_from_strangers_never_suggest(live: LiveDaemon) -> None:
    await live.post(
        "/v1/messages",
        message(1, text="I cannot log in to my account", **by(email="ann@example.org")),
    )
    for n in range(5):  # an outage: many visitors type the same few words
        await live.post(
            "/v1/messages",
            message(n + 2, text="I cannot log in to my account", **by(visitor_id=f"v-{n}")),
        )
    types = [e["type"] for e in await live.stream()]
    assert "helpline.contact.link_suggested.v1" not in types
