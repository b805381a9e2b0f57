"""The store's contract, shared by every engine (SQLite now, PostgreSQL later).

Writes are units of work run inside a grouped transaction (`Store.write`):
each unit sees the effects of the units before it in the same group, fails
alone (a savepoint each), and its caller is answered only after the group's
commit is durable. Reads use their own connection and see only what is
committed, so nothing a reader sees can later vanish.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from gateway.events import Event
from gateway.store.delivery import DeliveryReads, DeliveryTx
from gateway.store.records import (
    AutoAck,
    ClockRow,
    ContactRow,
    ConversationRow,
    FailingMark,
    Handle,
    HandleRecord,
    IdempotencyRecord,
    MailboxPosition,
    RawMail,
    ts,
)

__all__ = [
    "AutoAck",
    "ClockRow",
    "ContactRow",
    "ConversationRow",
    "FailingMark",
    "Handle",
    "HandleRecord",
    "IdempotencyRecord",
    "Latencies",
    "MailboxPosition",
    "MetStats",
    "Overloaded",
    "RawMail",
    "SchemaTooNew",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreHealth",
    "StoreUnavailable",
    "Tx",
    "UnitOfWork",
    "Waiting",
    "sqlite_path",
    "ts",
]

T = TypeVar("T")


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The store cannot commit now (disk full, I/O error): a temporary answer to the peer."""


class Overloaded(StoreError):
    """Too many writes wait for a commit; the peer should retry (503, SMTP 451)."""


class StoreClosed(StoreError):
    """The daemon is shutting down and takes no more writes."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer helpline; running older code on it is refused."""


class Tx(DeliveryTx, Protocol):
    """The write operations a unit of work may use, inside one grouped transaction."""

    async def get_idempotency(self, scope: str, key: str) -> IdempotencyRecord | None: ...

    async def put_idempotency(
        self, scope: str, key: str, digest: bytes, response: bytes, now: float
    ) -> None: ...

    async def contacts_for_handles(self, handles: list[Handle]) -> dict[Handle, str]: ...

    async def create_contact(self, contact_id: str, name: str | None, now: float) -> None: ...

    async def add_handle(
        self,
        contact_id: str,
        handle: Handle,
        now: float,
        cause_event: str | None = None,
        verified: bool = False,
    ) -> None: ...

    async def contacts_created(self, contact_ids: list[str]) -> dict[str, float]: ...

    async def group_handles(self, contact_id: str) -> list[Handle]: ...

    async def merge_contact(
        self, merged: str, survivor: str, cause_event: str | None, evidence: str, now: float
    ) -> None: ...

    async def split_contact(self, contact_id: str, now: float) -> str | None: ...

    async def first_suggestion(self, a: str, b: str, cause_event: str, now: float) -> bool: ...

    async def contact_group_ids(self, contact_id: str) -> list[str]: ...

    async def events_of_contacts(self, contact_ids: list[str]) -> list[tuple[int, bytes]]: ...

    async def replace_event_body(self, seq: int, body: bytes) -> None: ...

    async def erase_contacts(self, contact_ids: list[str], now: float) -> None:
        """Forget these contacts' handles, names, thread references, fingerprints and the
        mail they sent as it arrived; their events are tombstoned by the caller."""
        ...

    async def events_after(
        self, after: int, limit: int
    ) -> list[tuple[int, float, str, bool, bytes]]: ...

    async def stream_after(
        self, after: int, limit: int
    ) -> list[tuple[int, str, str | None, bytes]]:
        """(offset, type, conversation id, envelope) of the events after `after`, in order."""
        ...

    async def get_cursor(self, name: str) -> int | None: ...

    async def recent_fingerprints(
        self, contact_id: str, since: float, limit: int
    ) -> list[tuple[str, bytes]]: ...

    async def band_candidates(
        self, bands: list[int], since: float, contact_id: str, anonymous_only: bool, limit: int
    ) -> list[tuple[str, str, bool, bytes]]: ...

    async def put_fingerprint(
        self,
        event_id: str,
        contact_id: str,
        *,
        at: float,
        sketch: bytes,
        bands: list[int],
        anonymous: bool,
    ) -> None: ...

    async def forget_fingerprints(self, before: float) -> int: ...

    async def attachment_bytes(self) -> int: ...

    async def has_attachment(self, sha256: str) -> bool: ...

    async def put_attachment(self, sha256: str, content_type: str, data: bytes, now: float) -> bool:
        """Store new content; False when it was there already."""
        ...

    async def ref_attachment(self, event_id: str, sha256: str) -> None: ...

    async def drop_attachments_of(self, event_id: str) -> None: ...

    async def put_raw_mail(
        self,
        connector: str,
        now: float,
        mail_from: str | None,
        recipients: list[str],
        *,
        dedup_key: str,
        raw: bytes,
    ) -> int: ...

    async def finish_raw_mail(
        self, raw_id: int, event_id: str | None, note: str | None = None
    ) -> None: ...

    async def fail_raw_mail(self, raw_id: int, error: str) -> None: ...

    async def expire_raw_mail(self, before: float, limit: int) -> int:
        """Delete up to `limit` raw mails finished ('done') before `before`; how many went.

        Pending mail (not yet normalized) and failed mail (kept for an operator) stay.
        """
        ...

    async def raw_mail_known(self, dedup_key: str) -> bool: ...

    async def mark_failing(
        self,
        address: str,
        mark: FailingMark,
        offset: int,
    ) -> None:
        """Mark an email address failing from the event at `offset` on; a later mark
        replaces it. Mail from the address after that offset ends it (`failing`)."""
        ...

    async def failing(self, address: str) -> FailingMark | None:
        """The address's failing mark, unless mail from it (not refused by DMARC) has
        arrived since: then it evidently works again."""
        ...

    async def last_auto_ack(self, address: str) -> AutoAck | None: ...

    async def put_auto_ack(
        self, address: str, conversation_id: str, event_id: str, now: float
    ) -> None:
        """Record the acknowledgement an address was just sent (replacing the one before)."""
        ...

    async def put_mailbox_position(
        self, connector: str, position: MailboxPosition, now: float
    ) -> None: ...

    async def conversation_by_thread(self, kind: str, ref: str) -> ConversationRow | None: ...

    async def conversation_by_number(self, number: int) -> ConversationRow | None: ...

    async def put_thread(self, kind: str, ref: str, conversation_id: str, now: float) -> None: ...

    async def latest_conversation(self, contact_id: str) -> ConversationRow | None: ...

    async def get_conversation(self, conversation_id: str) -> ConversationRow | None: ...

    async def create_conversation(
        self,
        conversation_id: str,
        contact_id: str,
        channel: str,
        now: float,
        previous_id: str | None = None,
    ) -> ConversationRow: ...

    async def save_conversation(self, row: ConversationRow) -> None: ...

    async def append(self, event: Event) -> int: ...

    async def set_cursor(self, name: str, offset: int, now: float) -> None: ...

    async def latest_clock(self, conversation_id: str) -> ClockRow | None: ...

    async def put_clock(self, row: ClockRow) -> None:
        """Insert a new clock (its id is set) or update one by its id."""
        ...


UnitOfWork = Callable[[Tx], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class StoreHealth:
    writable: bool
    last_error: str | None
    pending: int
    head_offset: int


@dataclass(frozen=True, slots=True)
class Latencies:
    """Some answered clocks' latencies in seconds: exact nearest-rank percentiles (the
    smallest latency with at least p% of them at or below it, so one that really occurred),
    the share within target and how many went past it."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    within_target: float  # share 0..1, as each clock was judged when it stopped
    past_target: int  # stopped past target, or with a breach recorded


@dataclass(frozen=True, slots=True)
class MetStats:
    """The clocks stopped by an answer (state met) in a period, read in one snapshot.

    `channels` and `days` measure real seconds, or business seconds where the clock has a
    calendar when asked to; the two stages always measure real seconds."""

    channels: dict[str, Latencies]  # per clock channel (the one that started it)
    days: dict[tuple[str, str], Latencies]  # per (UTC date "YYYY-MM-DD", channel), in order
    customer_to_accepted: dict[str, Latencies]  # clocks with a customer's own send time
    accepted_to_reply: dict[str, Latencies]
    # per (channel, backend): from accepted to delivered into that backend
    accepted_to_backend: dict[tuple[str, str], Latencies] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Waiting:
    """The clocks of one channel still waiting for a human answer."""

    count: int
    past_due: int  # of them, how many passed their target (breach recorded or due)
    oldest: list[ClockRow]  # oldest first, at most the limit asked for


class Store(Protocol):
    """What the core needs of a store engine."""

    @property
    def delivery(self) -> DeliveryReads:
        """Ticket backends' positions, ticket map and dead letters."""
        ...

    async def write(self, unit: UnitOfWork[T]) -> T: ...

    async def read_stream(self, after: int, limit: int) -> list[tuple[int, bytes]]: ...

    def head_offset(self) -> int: ...

    async def list_conversations(
        self, status: str | None, channel: str | None, before: int | None, limit: int
    ) -> list[ConversationRow]: ...

    async def get_conversation(self, conversation_id: str) -> ConversationRow | None: ...

    async def conversation_events(
        self, conversation_id: str, after: int, limit: int
    ) -> list[tuple[int, bytes]]: ...

    async def get_contact(self, contact_id: str) -> ContactRow | None: ...

    async def contact_by_handle(self, kind: str, value: str) -> str | None: ...

    async def get_cursor(self, name: str) -> int | None: ...

    async def pending_raw_mail(self, connector: str, after: int, limit: int) -> list[RawMail]: ...

    async def mailbox_position(self, connector: str, mailbox: str) -> MailboxPosition | None: ...

    async def due_clocks(self, now: float, limit: int) -> list[ClockRow]:
        """Running clocks whose target passed and whose breach is not recorded yet."""
        ...

    async def next_due(self) -> float | None: ...

    async def running_clocks(self) -> list[tuple[int, str, float]]:
        """(id, channel, started_at) of every running clock: the tracker loads them once."""
        ...

    async def met_stats(
        self, since: float, until: float, channel: str | None, business: bool
    ) -> MetStats:
        """Latencies of the clocks stopped by an answer with `since <= stopped_at <= until`,
        per channel and per UTC day, aggregated by the engine (off the event loop)."""
        ...

    async def waiting_clocks(
        self, now: float, channel: str | None, limit: int
    ) -> dict[str, Waiting]:
        """Per channel with running clocks: how many, how many are past due at `now`, and
        the oldest `limit` of them."""
        ...

    async def get_attachment(self, sha256: str) -> tuple[str, bytes] | None: ...

    async def expire_idempotency(self, older_than: float) -> int: ...

    async def idempotency_stats(self) -> tuple[int, float | None]: ...

    def health(self) -> StoreHealth: ...

    async def close(self) -> None: ...


def sqlite_path(url: str, state_dir: Path) -> Path:
    """The database file of a `sqlite:///PATH` url (PATH absolute); empty: the state directory's."""
    if not url:
        return state_dir / "helpline.db"
    return Path(url[len("sqlite://") :])
