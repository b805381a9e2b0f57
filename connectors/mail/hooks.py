"""The aiosmtpd handler: recipient policy at RCPT; at DATA, a durable commit, then the reply.

The reply to DATA comes only after the raw message and its dedup key are
committed (DESIGN.md step 1): parsing the MIME costs about a millisecond and
is almost never a reason to refuse, so it happens after the 250, from the
stored record. A store that cannot take the message gets a 451, so the
sender's MTA retries; nothing is answered 250 that could be lost. So does a
full backlog of mail waiting to be normalized (connectors/mail/backlog.py):
the mail is then not committed at all.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from connectors.mail import replies
from connectors.mail.dedup import dedup_key, message_id_of
from gateway.ingest import Ingestor
from gateway.store import StoreError

if TYPE_CHECKING:
    from connectors.mail.backlog import Backlog

log = structlog.get_logger("connectors.mail")


class RecipientPolicy:
    """Which addresses this listener takes mail for: exact addresses or whole domains."""

    def __init__(self, patterns: list[str]) -> None:
        self._addresses = {p.lower() for p in patterns if not p.startswith("@")}
        self._domains = {p[1:].lower() for p in patterns if p.startswith("@")}

    def accepts(self, address: str) -> bool:
        address = address.lower()
        return address in self._addresses or address.rpartition("@")[2] in self._domains


class MailHandler:
    def __init__(
        self,
        connector: str,
        ingest: Ingestor,
        policy: RecipientPolicy,
        backlog: Backlog,
        lmtp: bool,
    ) -> None:
        self._connector = connector
        self._ingest = ingest
        self._policy = policy
        self._backlog = backlog
        self._lmtp = lmtp
        self._full = False  # the backlog was full at the last DATA (logged once per spell)
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.accepted = 0
        self.refused = 0

    async def handle_RCPT(  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if "@" not in address or address.startswith("@") or address.endswith("@"):
            self.refused += 1
            return replies.BAD_RECIPIENT.format(address=address)
        if not self._policy.accepts(address):
            self.refused += 1
            log.info("mail.recipient_refused", connector=self._connector, recipient=address)
            return replies.NOT_OURS.format(address=address)
        envelope.rcpt_tos.append(address)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or b""
        recipients = list(envelope.rcpt_tos)
        mail_from: str | None = envelope.mail_from  # "" is the null sender of a bounce
        if not self._backlog.reserve(len(raw)):
            if not self._full:
                self._full = True
                log.warning(
                    "mail.backlog_full", connector=self._connector, backlog=self._backlog.size
                )
            if self._lmtp:
                return "\r\n".join(replies.lmtp_backlog_full(r) for r in recipients)
            return replies.BACKLOG_FULL
        self._full = False
        self.inflight += 1
        self.idle.clear()
        key = dedup_key(raw, message_id_of(raw))
        try:
            raw_id = await self._ingest.accept_raw_mail(
                self._connector, mail_from, recipients, raw, key
            )
        except Exception as err:  # anything unexpected is "try later", never a 5xx
            self._backlog.release(len(raw))
            if isinstance(err, StoreError):
                log.warning("mail.deferred", connector=self._connector, error=str(err))
            else:
                log.exception("mail.accept_failed", connector=self._connector)
            if self._lmtp:
                return "\r\n".join(replies.lmtp_try_later(r) for r in recipients)
            return replies.TRY_LATER
        finally:
            self.inflight -= 1
            if not self.inflight:
                self.idle.set()
        self.accepted += 1
        self._backlog.add(raw_id, raw, recipients, key, mail_from)
        if self._lmtp:
            return "\r\n".join(replies.lmtp_accepted(r) for r in recipients)
        return replies.ACCEPTED
