"""Flagging "the same request again": near duplicates within a contact, hints across contacts.

A customer who emails, then asks the same thing in chat, is not asking twice:
the later message is appended but flagged `duplicate_of` the earlier one, so
an agent answers once. Candidates are the contact's (and merged contacts')
last few fingerprinted messages within `[near_duplicates] window`, newest
first, at most `max_candidates`, each compared in microseconds
(gateway/similarity.py): the check is O(1) per message. Only the first
`max_text` bytes of a text are fingerprinted, which bounds its cost too.

Across contacts, the same text from an anonymous chat visitor and from
another contact within minutes suggests they are one person: that raises a
link suggestion, never a merge (anyone can paste anyone's words). Candidates
come from an index of band keys, not a scan. Fingerprints older than the
longest window are swept, so storage stays bounded.
"""

from __future__ import annotations

import functools

from gateway.config import NearDuplicatesConfig
from gateway.contact_graph import contact_event
from gateway.events import EventType, HandleData, LinkSuggested
from gateway.similarity import Fingerprint, band_keys, fingerprint, similarity
from gateway.store import Handle, Tx

ANONYMOUS_REASON = "the same text from an anonymous visitor and another contact, minutes apart"
# Short texts ("my login does not work") are typed alike by strangers, all the more during
# an outage: only a text with this many distinct shingles (about a dozen words) can
# suggest that two people are one.
LINK_MIN_SHINGLES = 24


def prepare(
    text: str, config: NearDuplicatesConfig, *, own_only: bool = False
) -> Fingerprint | None:
    """The fingerprint of a text's start; computed before the transaction, off its path.

    `own_only`: the text holds only the sender's own words (quotes already cut).
    """
    head = text.encode()[: config.max_text].decode(errors="ignore")
    return fingerprint(head, own_only=own_only)


@functools.lru_cache(maxsize=1024)  # ~3 MB at most
def decoded(blob: bytes) -> Fingerprint:
    """A stored sketch, decoded once: the same recent ones are compared again and again."""
    return Fingerprint.from_bytes(blob)


async def is_anonymous(tx: Tx, contact_id: str, handles: list[Handle]) -> bool:
    """Known only by visitor ids: neither this message nor the contact's past gave more."""
    if any(kind != "visitor" for kind, _ in handles):
        return False
    return all(kind == "visitor" for kind, _ in await tx.group_handles(contact_id))


async def _same_text_elsewhere(
    tx: Tx,
    fp: Fingerprint,
    keys: list[int],
    *,
    contact_id: str,
    anonymous: bool,
    now: float,
    config: NearDuplicatesConfig,
) -> str | None:
    """The one other contact (if any) that sent this text minutes ago, one side anonymous."""
    candidates = await tx.band_candidates(
        keys, now - config.anonymous_window, contact_id, not anonymous, config.max_candidates
    )
    best, found = config.anonymous_threshold, None
    for _, other, _, blob in candidates:
        earlier = decoded(blob)
        if earlier.count < LINK_MIN_SHINGLES:
            continue
        score = similarity(fp, earlier)
        if score >= best:
            best, found = score, other
    return found


async def flag(
    tx: Tx,
    fp: Fingerprint | None,
    *,
    contact_id: str,
    handles: list[Handle],
    event_id: str,
    now: float,
    config: NearDuplicatesConfig,
    source: str,
    new_contact: bool = False,
) -> str | None:
    """The earlier event this message nearly repeats, if any; remembers its fingerprint."""
    if fp is None:
        return None
    duplicate_of, best = None, config.threshold
    earlier_ones = (
        []
        if new_contact  # a contact made by this message has sent nothing before
        else await tx.recent_fingerprints(contact_id, now - config.window, config.max_candidates)
    )
    for earlier, blob in earlier_ones:
        sketch = decoded(blob)
        score = 1.0 if sketch == fp else similarity(fp, sketch)
        if score > best or (duplicate_of is None and score >= best):  # ties: the newest
            duplicate_of, best = earlier, score
        if score >= 1.0:  # a copy: no older one can score higher (a flood of one text)
            break
    anonymous, keys = False, []
    if fp.count >= LINK_MIN_SHINGLES:  # only texts this long can suggest a link: index them
        keys = band_keys(fp)
        anonymous = await is_anonymous(tx, contact_id, handles)
        other = await _same_text_elsewhere(
            tx, fp, keys, contact_id=contact_id, anonymous=anonymous, now=now, config=config
        )
        if other is not None and await tx.first_suggestion(contact_id, other, event_id, now):
            data = LinkSuggested(
                contact_ids=[contact_id, other],
                handles=[HandleData(kind=k, value=v) for k, v in handles],
                cause_event_id=event_id,
                reason=ANONYMOUS_REASON,
            )
            event = contact_event(EventType.CONTACT_LINK_SUGGESTED, contact_id, data, source, now)
            await tx.append(event)
    await tx.put_fingerprint(
        event_id, contact_id, at=now, sketch=fp.to_bytes(), bands=keys, anonymous=anonymous
    )
    return duplicate_of
