"""One IMAP connection to one mailbox folder, driven from the connector's own thread.

IMAPClient (BSD) is a blocking client; each mailbox gets a thread of its own
and every call here runs there, one at a time, so the event loop never waits
on the network. aioimaplib, the asyncio client, is GPL-3.0 and cannot be a
dependency of an Apache-2.0 project. `abort()` is the one call made from the
loop's thread: it shuts the socket down, which ends a blocking IDLE at once.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

SEEN = b"\\Seen"


class LoginRefused(Exception):
    """The server refused the credentials: retrying with the same ones cannot help."""


@dataclass(frozen=True, slots=True)
class FolderState:
    uidvalidity: int
    uidnext: int


@dataclass(frozen=True, slots=True)
class Fetched:
    uid: int
    raw: bytes | None  # None: over the size limit, not fetched
    size: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    security: str  # "tls" | "starttls" | "none"
    tls: ssl.SSLContext | None
    timeout: float


class MailboxSession:
    """Connect, log in, select; then search, fetch and mark by UID."""

    def __init__(self, endpoint: Endpoint, folder: str) -> None:
        self._endpoint = endpoint
        self._folder = folder
        self._client: IMAPClient | None = None
        self.idle_supported = False
        self.move_supported = False
        self.uidplus = False
        self.selected = False  # the folder was opened: the connection worked

    def connect(self) -> None:
        ep = self._endpoint
        client = IMAPClient(
            ep.host, port=ep.port, ssl=ep.security == "tls", ssl_context=ep.tls, timeout=ep.timeout
        )
        self._client = client
        if ep.security == "starttls":
            client.starttls(ep.tls)

    def login(self, user: str, password: str) -> None:
        try:
            self._live().login(user, password)
        except LoginError as err:
            raise LoginRefused(f"login as {user!r} refused: {_text(err)}") from err
        self._capabilities()

    def login_xoauth2(self, user: str, token: str) -> None:
        try:
            self._live().oauth2_login(user, token)
        except LoginError as err:
            raise LoginRefused(f"XOAUTH2 login as {user!r} refused: {_text(err)}") from err
        self._capabilities()

    def _capabilities(self) -> None:
        client = self._live()
        self.idle_supported = client.has_capability("IDLE")
        self.move_supported = client.has_capability("MOVE")
        self.uidplus = client.has_capability("UIDPLUS")

    def select(self) -> FolderState:
        info: dict[bytes, Any] = self._live().select_folder(self._folder)
        self.selected = True
        return FolderState(int(info[b"UIDVALIDITY"]), int(info.get(b"UIDNEXT", 0)))

    def uidnext(self) -> int:
        status = self._live().folder_status(self._folder, [b"UIDNEXT"])
        return int(status[b"UIDNEXT"])

    def search(self, after: int, upto: int | None = None, unseen: bool = False) -> list[int]:
        """UIDs above `after` (and at most `upto`), ascending. `n:*` always matches the
        newest message even when its UID is below n, so the range is checked here too."""
        top = "*" if upto is None else str(upto)
        if upto is not None and upto <= after:
            return []
        criteria: list[Any] = ["UID", f"{after + 1}:{top}"]
        if unseen:
            criteria.append("UNSEEN")
        found = self._live().search(criteria)
        return sorted(
            uid for uid in (int(u) for u in found) if uid > after and (upto is None or uid <= upto)
        )

    def fetch(self, uids: list[int], max_size: int) -> list[Fetched]:
        """The messages in UID order; one over `max_size` is listed, not downloaded."""
        client = self._live()
        sizes = {
            int(u): int(d[b"RFC822.SIZE"]) for u, d in client.fetch(uids, ["RFC822.SIZE"]).items()
        }
        wanted = [u for u in uids if u in sizes and sizes[u] <= max_size]
        bodies: dict[int, bytes] = {}
        if wanted:
            for uid, data in client.fetch(wanted, ["BODY.PEEK[]"]).items():
                bodies[int(uid)] = bytes(data[b"BODY[]"])
        # A message expunged meanwhile is in neither answer: it is simply gone.
        return [
            Fetched(uid, bodies.get(uid), sizes[uid])
            for uid in uids
            if uid in sizes and (uid in bodies or sizes[uid] > max_size)
        ]

    def mark(self, uids: Iterable[int], move_to: str | None) -> None:
        """Flag as \\Seen, or move out of the folder, once their commit is durable."""
        client = self._live()
        batch = sorted(uids)
        if not batch:
            return
        if move_to is None:
            client.add_flags(batch, [SEEN], silent=True)
        elif self.move_supported:
            client.move(batch, move_to)
        else:
            client.copy(batch, move_to)
            client.delete_messages(batch, silent=True)
            if self.uidplus:
                client.uid_expunge(batch)
            else:
                client.expunge()

    def wait(self, timeout: float) -> bool:
        """IDLE until the server reports news or `timeout` passes; True on news."""
        client = self._live()
        client.idle()
        try:
            responses = client.idle_check(timeout=timeout)
        finally:
            client.idle_done()
        return any(_is_news(r) for r in responses)

    def noop(self) -> None:
        self._live().noop()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except (IMAPClientError, OSError, ssl.SSLError):
            client.shutdown()

    def abort(self) -> None:
        """From another thread: end whatever blocks on the socket now."""
        client = self._client
        if client is None:
            return
        with contextlib.suppress(OSError):
            client.socket().shutdown(socket.SHUT_RDWR)

    def _live(self) -> IMAPClient:
        if self._client is None:
            raise ConnectionError("not connected")
        return self._client


def _is_news(response: Any) -> bool:
    return (
        isinstance(response, tuple) and len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")
    )


def _text(err: Exception) -> str:
    text = str(err)
    return text[2:-1] if text.startswith(("b'", 'b"')) else text
