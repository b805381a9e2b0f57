"""The one transaction every inbound item goes through, and the acknowledgement it earns.

idempotency -> contact -> conversation -> append, as one unit of work in a
grouped commit. The Ack is returned only after that commit is durable, so a
connector that answers its peer with it never acknowledges what could be lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson

from gateway.ack import Ack, clamp_sent_at
from gateway.attachments import NewAttachment, store_attachments
from gateway.automatic import AutomaticInbound, record_automatic
from gateway.calls import CallStep, record_call
from gateway.config import Channel, CoreConfig
from gateway.contact_graph import UNVERIFIED, Evidence, resolve_contact
from gateway.conversations import ThreadRef, assign
from gateway.dedup import IdempotencyKey, recorded_answer, remember
from gateway.events import Event, EventType, InboundMessage, Sender
from gateway.identity import HandleRules, Handles
from gateway.ids import event_id
from gateway.metrics import Metrics
from gateway.near_duplicates import flag, prepare
from gateway.similarity import Fingerprint
from gateway.store import MailboxPosition, RawMail, Store, Tx


@dataclass(frozen=True, slots=True)
class Inbound:
    """A customer message as a connector hands it to the core, handles already normalized."""

    channel: Channel
    source: str
    handles: Handles
    text: str
    name: str | None = None
    subject: str | None = None
    # Set by a connector that already cut the quoted history and signature out of `text`
    # (into `quoted`), so the core does not scan for them a second time.
    quoted: str | None = None
    own_text_only: bool = False
    html: str | None = None
    external_id: str | None = None
    thread: ThreadRef | None = None
    sent_at: datetime | None = None
    idempotency: IdempotencyKey | None = None
    evidence: Evidence = UNVERIFIED
    # email: its Message-ID (registered for replies to thread on), the ids it replies to
    # (In-Reply-To, then References, newest first), its support addresses, its raw record.
    message_id: str | None = None
    references: tuple[str, ...] = ()
    ticket: ThreadRef | None = None  # a ticket token found in the subject
    sender_auth: str | None = None  # what a trusted checker said of the sender: "dmarc=pass"
    attachments: tuple[NewAttachment, ...] = ()
    recipients: tuple[str, ...] = ()
    raw_id: int | None = None

    def thread_lookups(self) -> list[ThreadRef]:
        found = [self.thread] if self.thread else []
        found += [ThreadRef("email", ref) for ref in self.references]
        return found + ([self.ticket] if self.ticket else [])

    def thread_registers(self) -> list[ThreadRef]:
        found = [self.thread] if self.thread else []
        return found + ([ThreadRef("email", self.message_id)] if self.message_id else [])


class Ingestor:
    def __init__(
        self,
        store: Store,
        config: CoreConfig,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.config = config  # also sets self.rules
        self._metrics = metrics
        self._clock = clock

    @property
    def config(self) -> CoreConfig:
        return self._config

    @config.setter
    def config(self, config: CoreConfig) -> None:
        self._config = config
        self.rules = HandleRules.from_config(config.identity)

    def now(self) -> float:
        return self._clock()

    async def accept_raw_mail(
        self,
        connector: str,
        mail_from: str | None,
        recipients: list[str],
        raw: bytes,
        dedup_key: str,
    ) -> int:
        """Make a mail durable as it arrived; the caller may answer 250 once this returns."""
        now = self._clock()

        async def unit(tx: Tx) -> int:
            return await tx.put_raw_mail(
                connector, now, mail_from, recipients, dedup_key=dedup_key, raw=raw
            )

        return await self._store.write(unit)

    async def accept_fetched_mail(
        self,
        connector: str,
        position: MailboxPosition | None,
        recipients: list[str],
        raw: bytes,
        dedup_key: str,
    ) -> int | None:
        """Commit a mail read from a mailbox together with the mailbox position past it
        (when the mailbox has one yet).

        One transaction, so a restart neither re-reads nor skips it. None when the same
        mail is held already (it came by SMTP too, or the mailbox is read again after a
        UIDVALIDITY change): then only the position moves.
        """
        now = self._clock()

        async def unit(tx: Tx) -> int | None:
            if position is not None:
                await tx.put_mailbox_position(connector, position, now)
            if await tx.raw_mail_known(dedup_key):
                return None
            return await tx.put_raw_mail(
                connector, now, None, recipients, dedup_key=dedup_key, raw=raw
            )

        return await self._store.write(unit)

    async def mailbox_position(self, connector: str, mailbox: str) -> MailboxPosition | None:
        return await self._store.mailbox_position(connector, mailbox)

    async def set_mailbox_position(self, connector: str, position: MailboxPosition) -> None:
        """Record a position that covers no new mail: marking done, a fresh UIDVALIDITY."""
        now = self._clock()

        async def unit(tx: Tx) -> None:
            await tx.put_mailbox_position(connector, position, now)

        await self._store.write(unit)

    async def pending_raw_mail(
        self, connector: str, after: int = 0, limit: int = 500
    ) -> list[RawMail]:
        """Mail a connector accepted but did not finish normalizing (a crash in between)."""
        return await self._store.pending_raw_mail(connector, after, limit)

    async def ingest_call(self, step: CallStep) -> Ack:
        """Record one step of a phone call (ringing, answered, missed) on its conversation."""
        rules = self.rules
        step = replace(step, phone=rules.phone(step.phone, "phone"))

        async def unit(tx: Tx) -> Ack:
            return await record_call(tx, step, self.config, self._clock())

        ack = await self._store.write(unit)
        counter = self._metrics.duplicates if ack.duplicate else self._metrics.ingested
        counter.labels("voice").inc()
        return ack

    async def ingest_automatic(self, item: AutomaticInbound) -> str | None:
        """Record mail no human wrote on the conversation it names; it never opens one."""

        async def unit(tx: Tx) -> str | None:
            return await record_automatic(tx, item, self.config, self._clock())

        return await self._store.write(unit)

    async def fail_raw_mail(self, raw_id: int, error: str) -> None:
        """Park an accepted mail that cannot become an event; it stays for an operator."""

        async def unit(tx: Tx) -> None:
            await tx.fail_raw_mail(raw_id, error)

        await self._store.write(unit)

    async def ingest(self, item: Inbound) -> Ack:
        if not item.handles.ordered():
            raise ValueError("an inbound item needs at least one handle")

        fp = prepare(item.text, self.config.near_duplicates, own_only=item.own_text_only)

        async def unit(tx: Tx) -> tuple[Ack, bool]:
            return await self._ingest(tx, item, fp)

        # Counted once committed: a unit may run twice inside a group (store/batching.py).
        ack, reused_id = await self._store.write(unit)
        counter = self._metrics.duplicates if ack.duplicate else self._metrics.ingested
        counter.labels(item.channel).inc()
        if reused_id:
            self._metrics.message_id_conflicts.labels(item.channel).inc()
        return ack

    async def _ingest(self, tx: Tx, item: Inbound, fp: Fingerprint | None) -> tuple[Ack, bool]:
        """The ack, and whether the mail reused a Message-ID known for other content."""
        now = self._clock()
        window = self.config.ingest.idempotency_window
        answer = await recorded_answer(tx, item.idempotency, window, now)
        if answer is not None:
            ack = Ack.replayed(answer)
            if item.raw_id is not None:
                await tx.finish_raw_mail(item.raw_id, ack.event_id)
            return ack, False
        # Not a redelivery (that has the same key): someone reused the id. Taken, counted;
        # the id keeps leading to the conversation that first had it.
        reused_id = bool(
            item.message_id and await tx.conversation_by_thread("email", item.message_id)
        )
        new_event = event_id()
        resolved = await resolve_contact(
            tx,
            item.handles,
            item.name,
            now,
            evidence=item.evidence,
            cause_event=new_event,
            source=item.source,
        )
        contact = resolved.contact_id
        conversation = await assign(
            tx,
            contact_id=contact,
            channel=item.channel,
            lookups=item.thread_lookups(),
            registers=item.thread_registers(),
            now=now,
            reopen_window=self.config.conversations.reopen_window,
            max_reference_age=self.config.conversations.max_reference_age,
            source=item.source,
            new_contact=resolved.created,
        )
        duplicate_of = await flag(
            tx,
            fp,
            contact_id=contact,
            handles=item.handles.ordered(),
            event_id=new_event,
            now=now,
            config=self.config.near_duplicates,
            source=item.source,
            new_contact=resolved.created,
        )
        accepted = datetime.fromtimestamp(now, UTC)
        attachments = await store_attachments(
            tx, new_event, item.attachments, self.config.ingest, now
        )
        event = Event(
            id=new_event,
            type=EventType.MESSAGE_INBOUND,
            source=item.source,
            time=accepted,
            subject=conversation.id,
            conversation_id=conversation.id,
            contact_id=contact,
            data=InboundMessage(
                channel=item.channel,
                conversation_id=conversation.id,
                conversation_number=conversation.number,
                contact_id=contact,
                sender=Sender(
                    email=item.handles.email,
                    phone=item.handles.phone,
                    visitor_id=item.handles.visitor_id,
                    name=item.name,
                ),
                subject=item.subject,
                text=item.text,
                quoted=item.quoted,
                html=item.html,
                external_id=item.external_id,
                thread=item.thread.ref if item.thread else None,
                message_id=item.message_id,
                recipients=list(item.recipients),
                sender_auth=item.sender_auth,
                attachments=attachments,
                duplicate_of=duplicate_of,
                sent_at=clamp_sent_at(item.sent_at, accepted),
                accepted_at=accepted,
            ),
        )
        offset = await tx.append(event)
        if item.raw_id is not None:
            await tx.finish_raw_mail(item.raw_id, event.id)
        ack = Ack(offset, event.id, conversation.id, contact)
        await remember(tx, item.idempotency, orjson.dumps(ack.as_json()), now)
        return ack, reused_id
