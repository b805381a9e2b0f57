"""From a stored raw mail to a customer message in the stream.

Runs after the sender has its 250, from the durable record, and again at the
next start for whatever a crash interrupted. A mail that cannot become an
event (no usable sender address) is parked as failed with its reason, never
dropped; a store that cannot take it now is retried with backoff.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import nh3
import structlog

from connectors.mail.dsn import DeliveryReport, read_report
from connectors.mail.hooks import RecipientPolicy
from connectors.mail.loops import Automatic, classify
from connectors.mail.parse import ParsedMail, parse_with_headers
from connectors.mail.received import trusted_received_at
from connectors.mail.sender_auth import Verdict, dmarc_verdict
from gateway.attachments import NewAttachment
from gateway.automatic import AutomaticInbound
from gateway.contact_graph import UNVERIFIED, Evidence
from gateway.conversations import ThreadRef, ticket_in
from gateway.dedup import IdempotencyKey
from gateway.errors import InvalidInput
from gateway.events import FailedRecipient, Sender
from gateway.identity import Handles
from gateway.ingest import Inbound, Ingestor
from gateway.quoting import split_reply
from gateway.store import StoreError

log = structlog.get_logger("connectors.mail")

RETRY_START = 0.5
RETRY_CAP = 30.0
RECOVERY_BATCH = 200


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def to_inbound(
    parsed: ParsedMail,
    ingest: Ingestor,
    *,
    source: str,
    raw_id: int,
    recipients: list[str],
    key: str,
    dmarc: Verdict | None = None,
    relayed_at: datetime | None = None,
) -> Inbound:
    if not parsed.from_email:
        raise InvalidInput("From", "the mail has no sender address")
    email = ingest.rules.email(parsed.from_email, "From")
    refs = ([parsed.in_reply_to] if parsed.in_reply_to else []) + parsed.references[::-1]
    ticket = ticket_in(parsed.subject, ingest.config.conversations.ticket_token)
    if dmarc == "fail":  # not who it claims: its references must not place it in a thread
        refs, ticket = [], None
    own, quoted = split_reply(parsed.text)
    return Inbound(
        channel="email",
        source=source,
        handles=Handles(email=email),
        name=parsed.from_name,
        subject=parsed.subject,
        text=own,
        quoted=quoted or None,
        own_text_only=True,
        html=nh3.clean(parsed.html) if parsed.html else None,
        # The sender's Date, but never later than our own relays saw the mail.
        sent_at=min((_aware(t) for t in (parsed.date, relayed_at) if t), default=None),
        # Keyed per channel, not per listener: the same mail by SMTP and by IMAP is one event.
        idempotency=IdempotencyKey("email", key, key.encode(), f"Message {key!r}"),
        message_id=parsed.message_id,
        references=tuple(dict.fromkeys(refs)),
        ticket=ticket,
        recipients=tuple(recipients),
        raw_id=raw_id,
        evidence=Evidence(True, "dmarc_pass") if dmarc == "pass" else UNVERIFIED,
        sender_auth=f"dmarc={dmarc}" if dmarc else None,
        attachments=tuple(
            NewAttachment(a.filename, a.content_type, a.data, a.content_id, a.inline)
            for a in parsed.attachments
        ),
    )


def failed_recipients(report: DeliveryReport, ingest: Ingestor) -> tuple[FailedRecipient, ...]:
    """The recipients a report says failed, their addresses normalized like handles
    (an address that is none is left out)."""
    found = []
    for recipient in report.recipients:
        if not recipient.failed:
            continue
        try:
            address = ingest.rules.email(recipient.address, "Final-Recipient")
        except InvalidInput:
            continue
        found.append(
            FailedRecipient(
                address=address,
                status=recipient.status,
                diagnostic=recipient.diagnostic,
                permanent=recipient.permanent,
            )
        )
    return tuple(found)


def to_automatic(
    parsed: ParsedMail,
    found: Automatic,
    ingest: Ingestor,
    *,
    source: str,
    raw_id: int,
    key: str,
    report: DeliveryReport | None = None,
) -> AutomaticInbound:
    report = report or DeliveryReport()
    token = ingest.config.conversations.ticket_token
    # A bounce names the mail it returns (helpline's reply) in its attached headers,
    # more surely than in its own, which usually name nothing.
    refs = [*report.original_ids, *([parsed.in_reply_to] if parsed.in_reply_to else [])]
    refs += parsed.references[::-1]
    lookups = [ThreadRef("email", ref) for ref in dict.fromkeys(refs)]
    for subject in (parsed.subject, report.original_subject):
        ticket = ticket_in(subject, token)
        if ticket is not None and ticket not in lookups:
            lookups.append(ticket)
    return AutomaticInbound(
        channel="email",
        source=source,
        kind=found.kind,
        reason=found.reason,
        sender=Sender(email=parsed.from_email, name=parsed.from_name),
        lookups=tuple(lookups),
        subject=parsed.subject,
        message_id=parsed.message_id,
        idempotency=IdempotencyKey("email", key, key.encode(), f"Message {key!r}"),
        raw_id=raw_id,
        failed_recipients=failed_recipients(report, ingest),
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """An accepted mail made ready for the store: the item to ingest, or why there is none
    (the mail is then parked as failed)."""

    raw_id: int
    source: str
    item: Inbound | AutomaticInbound | None
    error: str | None = None


def prepare(
    ingest: Ingestor,
    raw: bytes,
    *,
    source: str,
    raw_id: int,
    recipients: list[str],
    key: str,
    mail_from: str | None,
    own: RecipientPolicy,
    trusted: frozenset[str] = frozenset(),
) -> Prepared:
    """Parse one accepted mail into what ingest takes (the CPU part of normalizing)."""
    parsed, headers = parse_with_headers(raw)  # the header fields once, for both checks
    found = classify(headers, parsed, mail_from, own)
    dmarc = dmarc_verdict(headers, parsed.from_email, trusted)
    try:
        report = read_report(raw) if found and found.kind == "bounce" else None
        item: Inbound | AutomaticInbound = (
            to_automatic(
                parsed, found, ingest, source=source, raw_id=raw_id, key=key, report=report
            )
            if found
            else to_inbound(
                parsed,
                ingest,
                source=source,
                raw_id=raw_id,
                recipients=recipients,
                key=key,
                dmarc=dmarc,
                relayed_at=trusted_received_at(headers, trusted),
            )
        )
    except InvalidInput as err:
        return Prepared(raw_id, source, None, str(err))
    return Prepared(raw_id, source, item)


async def deliver(ingest: Ingestor, prepared: Prepared) -> None:
    """Ingest a prepared mail (or park it as failed); retried while the store cannot take it."""
    raw_id, item = prepared.raw_id, prepared.item
    if item is None:
        error = prepared.error or "unusable"
        log.warning("mail.unusable", raw_id=raw_id, source=prepared.source, error=error)
        await ingest.fail_raw_mail(raw_id, error)
        return
    delay = RETRY_START
    while True:
        try:
            if isinstance(item, AutomaticInbound):
                recorded = await ingest.ingest_automatic(item)
                log.info(
                    "mail.automatic",
                    raw_id=raw_id,
                    kind=item.kind,
                    event_id=recorded,
                    failed_recipients=len(item.failed_recipients),
                )
            else:
                ack = await ingest.ingest(item)
                log.info(
                    "mail.ingested",
                    raw_id=raw_id,
                    event_id=ack.event_id,
                    conversation_id=ack.conversation_id,
                    duplicate=ack.duplicate,
                )
            return
        except StoreError as err:
            log.warning("mail.normalize_deferred", raw_id=raw_id, error=str(err), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(RETRY_CAP, delay * 2)


@dataclass(frozen=True, slots=True)
class MailIntake:
    """What every mail connector normalizes with: where its mail comes from, its own
    addresses (mail from them is a loop) and the checkers whose verdicts it believes."""

    ingest: Ingestor
    source: str
    own: RecipientPolicy
    trusted: frozenset[str] = frozenset()

    def prepare(
        self, raw_id: int, raw: bytes, recipients: list[str], key: str, mail_from: str | None
    ) -> Prepared:
        return prepare(
            self.ingest,
            raw,
            source=self.source,
            raw_id=raw_id,
            recipients=recipients,
            key=key,
            mail_from=mail_from,
            own=self.own,
            trusted=self.trusted,
        )

    async def deliver(self, prepared: Prepared) -> None:
        await deliver(self.ingest, prepared)
