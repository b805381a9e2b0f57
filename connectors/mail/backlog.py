"""The mail a mail connector accepted and has yet to turn into events: bounded, in order.

An SMTP/LMTP session takes a place in the backlog before it commits a mail; when
the backlog is full (`max_backlog` mails or `max_backlog_bytes` of them) DATA is
answered 451 and nothing is committed, so the sender's MTA keeps the mail and
retries; an IMAP reader waits for a place instead (the mail stays in its
mailbox). Memory never holds more than the bound, whatever the load.

One task works through the backlog in the order the mail was accepted, a mail
at a time, and yields to the event loop after each, so SMTP sessions keep being
answered while it works. Parsing a mail is the CPU part; its store write then
joins a group commit while the next mail is parsed (up to `WRITES` writes in
flight, submitted in order), so the pace is not one mail per disk sync.

Mail committed is never lost here: what is in the backlog at stop is simply
left (stop stays bounded), still pending in the store, and the task's first
work at the next start is to normalize every pending mail of the connector,
through the same path, before the mail that arrives meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from connectors.mail import normalize
from connectors.mail.normalize import MailIntake, Prepared

log = structlog.get_logger("connectors.mail")

WRITES = 64  # store writes of normalized mail in flight (each joins a group commit)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A committed mail, as its session had it."""

    raw_id: int
    raw: bytes
    recipients: list[str]
    key: str
    mail_from: str | None


class Backlog:
    """One connector's accepted mail waiting to be normalized (see the module docstring)."""

    def __init__(
        self,
        intake: MailIntake,
        connector: str,
        *,
        max_mails: int,
        max_bytes: int,
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]],
    ) -> None:
        self._intake = intake
        self._connector = connector
        self._max_mails = max_mails
        self._max_bytes = max_bytes
        self._spawn = spawn
        self._queue: deque[Accepted] = deque()
        self._queued_ids: set[int] = set()
        self._recovered_ids: set[int] = set()  # taken up from the store at start
        self._mails = 0  # places taken: reserved, queued, being parsed or written
        self._bytes = 0
        self._wake = asyncio.Event()
        self._freed = asyncio.Event()  # a place came free (a mailbox reader waits on it)
        self._writes = asyncio.Semaphore(WRITES)
        self.normalized = 0  # written into the stream (or parked as failed)
        self.recovered = 0
        self.refused = 0  # DATA answered 451 because the backlog was full

    @property
    def size(self) -> int:
        """Mails accepted (or being committed) and not yet normalized."""
        return self._mails

    def reserve(self, size: int) -> bool:
        """A place for a mail of `size` bytes about to be committed; False when full. A
        mail larger than the byte bound still gets one when nothing else waits."""
        if self._mails >= self._max_mails or (self._mails and self._bytes + size > self._max_bytes):
            self.refused += 1
            return False
        self._mails += 1
        self._bytes += size
        return True

    def release(self, size: int) -> None:
        """The commit failed (or the mail was held already): the place is free again."""
        self._mails -= 1
        self._bytes -= size
        self._freed.set()

    async def place(self, size: int) -> None:
        """Wait for a place and take it: a mailbox reader pauses rather than refuse."""
        while self._mails >= self._max_mails or (
            self._mails and self._bytes + size > self._max_bytes
        ):
            self._freed.clear()
            await self._freed.wait()
        self._mails += 1
        self._bytes += size

    def add(
        self, raw_id: int, raw: bytes, recipients: list[str], key: str, mail_from: str | None
    ) -> None:
        """The reserved mail is committed: normalize it after those before it."""
        if raw_id in self._recovered_ids:  # the start's recovery read it from the store
            self.release(len(raw))  # in the moment between its commit and this call
            return
        self._queue.append(Accepted(raw_id, raw, recipients, key, mail_from))
        self._queued_ids.add(raw_id)
        self._wake.set()

    async def run(self) -> None:
        """Normalize what a previous run left pending, then the mail of this run, in order."""
        await self._recover()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            mail = self._queue.popleft()
            self._queued_ids.discard(mail.raw_id)
            await self._take(mail, placed=True)

    async def _recover(self) -> None:
        after = 0
        while batch := await self._intake.ingest.pending_raw_mail(
            self._connector, after, normalize.RECOVERY_BATCH
        ):
            for m in batch:
                if m.id in self._queued_ids:  # accepted by this run: it comes in its turn
                    continue
                self._recovered_ids.add(m.id)
                mail = Accepted(m.id, m.raw, list(m.recipients), m.dedup_key, m.mail_from)
                await self._take(mail, placed=False)  # (it took no place: not counted)
                self.recovered += 1
            after = batch[-1].id
        if self.recovered:
            log.info("mail.recovered", connector=self._connector, messages=self.recovered)

    async def _take(self, mail: Accepted, *, placed: bool) -> None:
        """Parse one mail, start its store write, then let the loop run."""
        place = (1, len(mail.raw)) if placed else (0, 0)
        try:
            prepared = self._intake.prepare(
                mail.raw_id, mail.raw, mail.recipients, mail.key, mail.mail_from
            )
        except Exception as err:  # a bug: parked as failed (it would fail at every start)
            log.exception("mail.normalize_failed", raw_id=mail.raw_id)
            error = f"normalizing failed: {type(err).__name__}: {err}"
            prepared = Prepared(mail.raw_id, self._intake.source, None, error)
        await self._writes.acquire()
        self._spawn(self._write(prepared, place), f"normalize-{mail.raw_id}")
        await asyncio.sleep(0)

    async def _write(self, prepared: Prepared, place: tuple[int, int]) -> None:
        try:
            await self._intake.deliver(prepared)
            self.normalized += 1
        except Exception:  # a bug: the mail stays pending for the next start
            log.exception("mail.normalize_failed", raw_id=prepared.raw_id)
        finally:
            self._writes.release()
            self._free(place)

    def _free(self, place: tuple[int, int]) -> None:
        self._mails -= place[0]
        self._bytes -= place[1]
        self._freed.set()
