"""Reading the stream, and waking readers when a commit adds to it (no polling).

Offsets come from the store in commit order, so a reader that has seen N
never later finds a new event below N; a reader only needs to remember the
last offset it handled.
"""

from __future__ import annotations

import asyncio
import time

from gateway.store import Store, Tx


class StreamNotifier:
    """Wakes every waiter once per commit that moved the head."""

    def __init__(self, head: int = 0) -> None:
        self.head = head
        self._changed = asyncio.Event()

    def committed(self, head: int) -> None:
        self.head = head
        self._changed.set()
        self._changed = asyncio.Event()

    def wake_all(self) -> None:
        """Release every waiter now (at shutdown), whether or not anything was committed."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_beyond(self, offset: int, timeout: float) -> bool:
        """Wait until the head passes `offset`; False if the timeout came first.

        asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
        lands as the event fires, and a loop around this call then never stops."""
        if self.head > offset:
            return True
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return self.head > offset
        return True


class StreamReader:
    """What components and the API use to read and follow the stream."""

    def __init__(self, store: Store, notifier: StreamNotifier) -> None:
        self._store = store
        self._notifier = notifier

    @property
    def head(self) -> int:
        return self._notifier.head

    async def read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        return await self._store.read_stream(after, limit)

    async def conversation(self, conversation_id: str, limit: int = 1000) -> list[bytes]:
        """A conversation's events in order (what a reply needs to thread and address)."""
        return [
            body for _, body in await self._store.conversation_events(conversation_id, 0, limit)
        ]

    async def attachment(self, attachment_id: str) -> tuple[str, bytes] | None:
        """An attachment's content type and bytes by its id (att_ + SHA-256), if stored."""
        return await self._store.get_attachment(attachment_id.removeprefix("att_"))

    async def cursor(self, name: str) -> int | None:
        """A subscriber's durable position: the last offset it finished with."""
        return await self._store.get_cursor(name)

    async def save_cursor(self, name: str, offset: int) -> None:
        async def unit(tx: Tx) -> None:
            await tx.set_cursor(name, offset, time.time())

        await self._store.write(unit)

    async def wait(self, after: int, timeout: float) -> bool:
        return await self._notifier.wait_beyond(after, timeout)
