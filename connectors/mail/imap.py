"""The `imap` connector type: one mailbox folder, read by UID, never twice, never skipped.

Each message is committed as raw mail together with the folder's position past
it (UIDVALIDITY and UID, through the core's ingest API: the connector never
touches the store), and flagged \\Seen or moved only after that commit, so a
crash at any point neither loses a message nor ingests it again. A changed
UIDVALIDITY reads the folder anew; mail helpline already holds (by its dedup
key) is only marked. IDLE where the server has it, polling otherwise; a lost
connection is retried with capped backoff and shows in /readyz meanwhile.
"""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

from imapclient.exceptions import IMAPClientError
from pydantic import Field, model_validator

from connectors.mail.backlog import Backlog
from connectors.mail.dedup import dedup_key, message_id_of
from connectors.mail.hooks import RecipientPolicy
from connectors.mail.imap_session import (
    Endpoint,
    Fetched,
    FolderState,
    LoginRefused,
    MailboxSession,
)
from connectors.mail.normalize import MailIntake
from connectors.mail.oauth import OAuthConfig, OAuthError, TokenSource
from gateway.component import ComponentContext, ComponentState, Health
from gateway.config_types import Secret, Section
from gateway.store import MailboxPosition, StoreError
from gateway.units import ByteSize, Duration

T = TypeVar("T")

# What a dropped or refused connection raises, from the socket up to the IMAP layer.
NETWORK_ERRORS = (OSError, ssl.SSLError, IMAPClientError, EOFError, ConnectionError)


class ImapConfig(Section):
    host: str
    port: int = Field(default=0, ge=0, le=65535)  # 0: 993 with tls, else 143
    security: Literal["tls", "starttls", "none"] = "tls"
    verify_certificate: bool = True
    ca_file: str = ""  # trust this CA (PEM) instead of the system's
    user: str
    auth: Literal["password", "xoauth2"] = "password"
    password: Secret | None = None
    oauth: OAuthConfig | None = None
    folder: str = "INBOX"
    # The support address this mailbox receives for; empty: `user` when it is an address.
    address: str = ""
    # After the commit: flag the message \Seen, or move it to `move_to`.
    after_ingest: Literal["seen", "move"] = "seen"
    move_to: str = ""
    # On first sight of the folder (or a changed UIDVALIDITY): read its unseen mail, all
    # of it, or only what arrives from now on.
    start: Literal["unseen", "all", "new"] = "unseen"
    idle: bool = True
    # IDLE is renewed this often (RFC 2177: before 29 minutes).
    idle_renew: Duration = Field(default=1500.0, gt=0, le=1740)
    # Without IDLE (or with idle = false), how often the folder is checked.
    poll_interval: Duration = Field(default=60.0, gt=0)
    batch_size: int = Field(default=50, ge=1, le=1000)
    # Mail read and committed but not yet normalized: past either bound, reading pauses.
    max_backlog: int = Field(default=2000, ge=1, le=1_000_000)
    max_backlog_bytes: ByteSize = 256 * 1024 * 1024
    # A message larger than this is left in the mailbox, unread, and counted.
    max_message_size: ByteSize = 25 * 1024 * 1024
    timeout: Duration = 30.0
    reconnect_initial: Duration = Field(default=1.0, gt=0)
    reconnect_cap: Duration = Field(default=300.0, gt=0)
    trusted_authserv_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ImapConfig:
        if self.auth == "password" and self.password is None:
            raise ValueError("auth = 'password' needs password")
        if self.auth == "xoauth2" and self.oauth is None:
            raise ValueError("auth = 'xoauth2' needs an [oauth] table (token_url, client_id, ...)")
        if self.after_ingest == "move" and not self.move_to:
            raise ValueError("after_ingest = 'move' needs move_to (a folder name)")
        if self.after_ingest == "move" and self.move_to == self.folder:
            raise ValueError("move_to must be another folder than folder")
        if not (self.address or "@" in self.user):
            raise ValueError("give address (the support address), as user is not one")
        return self

    @property
    def support_address(self) -> str:
        return self.address or self.user

    def endpoint(self) -> Endpoint:
        port = self.port or (993 if self.security == "tls" else 143)
        tls = None
        if self.security != "none":
            tls = ssl.create_default_context(cafile=self.ca_file or None)
            if not self.verify_certificate:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        return Endpoint(self.host, port, self.security, tls, self.timeout)


class ImapConnector:
    config_model: ClassVar[type[ImapConfig]] = ImapConfig
    is_listener: ClassVar[bool] = False

    def __init__(self, name: str, config: ImapConfig) -> None:
        self.name = name
        self.config = config
        self._tokens = (
            TokenSource(config.oauth) if config.auth == "xoauth2" and config.oauth else None
        )
        self._executor: ThreadPoolExecutor | None = None
        self._session: MailboxSession | None = None
        self._backlog: Backlog | None = None
        self._task: asyncio.Task[None] | None = None
        self._state = ComponentState.STARTING
        self._since = datetime.now(UTC)
        self._error: str | None = None
        self._counters = {"fetched": 0, "already_held": 0, "too_large": 0, "reconnects": 0}

    @property
    def key(self) -> str:
        return f"connectors.{self.name}"

    async def start(self, ctx: ComponentContext) -> None:
        """Returns at once: reaching the mailbox is the run loop's job, seen in health()."""
        cfg = self.config
        trusted = frozenset(a.lower() for a in cfg.trusted_authserv_ids)
        own = RecipientPolicy([cfg.support_address])
        intake = MailIntake(ctx.ingest, f"/connectors/{self.name}", own, trusted)
        self._backlog = Backlog(
            intake,
            self.key,
            max_mails=cfg.max_backlog,
            max_bytes=cfg.max_backlog_bytes,
            spawn=ctx.create_task,
        )
        ctx.create_task(self._backlog.run(), "normalize")  # pending mail of a previous run first
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"imap-{self.name}")
        self._task = ctx.create_task(self._run(ctx), "mailbox")

    async def stop(self) -> None:
        if self._session is not None:
            self._session.abort()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._set(ComponentState.STOPPED)

    def health(self) -> Health:
        backlog = self._backlog
        counters = {
            **self._counters,
            "backlog": backlog.size if backlog else 0,
            "normalized": backlog.normalized if backlog else 0,
        }
        return Health(self._state, self._since, self._error, counters)

    def _set(self, state: ComponentState, error: str | None = None) -> None:
        if state is not self._state:
            self._state, self._since = state, datetime.now(UTC)
        self._error = error

    async def _call(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _run(self, ctx: ComponentContext) -> None:
        delay = self.config.reconnect_initial
        while True:
            session = MailboxSession(self.config.endpoint(), self.config.folder)
            self._session = session
            try:
                await self._serve(ctx, session)
            except LoginRefused as err:
                self._set(ComponentState.DEGRADED, str(err))
                ctx.log.error("imap.login_refused", error=str(err))
                if self._tokens is not None:
                    self._tokens.forget()
                delay = self.config.reconnect_cap  # a wrong password is not fixed by hammering
            except OAuthError as err:
                self._set(ComponentState.DEGRADED, str(err))
                ctx.log.error("imap.token_failed", error=str(err), permanent=err.permanent)
                if err.permanent:
                    delay = self.config.reconnect_cap
            except (*NETWORK_ERRORS, StoreError) as err:
                text = f"{type(err).__name__}: {err}"
                self._set(ComponentState.DEGRADED, text)
                ctx.log.warning("imap.disconnected", error=text, retry_in=delay)
            finally:
                self._session = None
                await self._call(session.close)
            if session.selected:  # it worked for a while: start the backoff afresh
                delay = self.config.reconnect_initial
            self._counters["reconnects"] += 1
            await asyncio.sleep(delay)
            delay = min(self.config.reconnect_cap, delay * 2)

    async def _serve(self, ctx: ComponentContext, session: MailboxSession) -> None:
        cfg = self.config
        await self._call(session.connect)
        if self._tokens is not None:
            await self._call(session.login_xoauth2, cfg.user, await self._tokens.token())
        elif cfg.password is not None:  # the config model requires one of the two
            await self._call(session.login, cfg.user, cfg.password.get_secret_value())
        folder: FolderState = await self._call(session.select)
        self._set(ComponentState.RUNNING)
        ctx.log.info(
            "imap.connected",
            folder=cfg.folder,
            uidvalidity=folder.uidvalidity,
            idle=session.idle_supported and cfg.idle,
        )
        position = await ctx.ingest.mailbox_position(self.key, cfg.folder)
        if position is None or position.uidvalidity != folder.uidvalidity:
            position = await self._first_read(ctx, session, folder, position)
        else:
            position = await self._mark_backlog(ctx, session, position)
        use_idle = cfg.idle and session.idle_supported
        while True:
            position = await self._read_new(ctx, session, position)
            if use_idle:
                await self._call(session.wait, cfg.idle_renew)
            else:
                await asyncio.sleep(cfg.poll_interval)
                await self._call(session.noop)

    async def _first_read(
        self,
        ctx: ComponentContext,
        session: MailboxSession,
        folder: FolderState,
        old: MailboxPosition | None,
    ) -> MailboxPosition:
        """The folder as first seen (or renumbered): read what `start` says, up to the UIDs
        it had then, and only record the position once all of it is committed and marked.
        A crash midway reads it again; mail already held is then only marked."""
        cfg = self.config
        if old is not None:
            ctx.log.warning(
                "imap.uidvalidity_changed",
                folder=cfg.folder,
                was=old.uidvalidity,
                now=folder.uidvalidity,
            )
        top = (folder.uidnext or await self._call(session.uidnext)) - 1
        if cfg.start != "new":
            uids = await self._call(session.search, 0, top, cfg.start == "unseen")
            for batch in _batches(uids, cfg.batch_size):
                await self._take(ctx, session, batch, None)
        position = MailboxPosition(cfg.folder, folder.uidvalidity, top, top)
        await ctx.ingest.set_mailbox_position(self.key, position)
        return position

    async def _mark_backlog(
        self, ctx: ComponentContext, session: MailboxSession, position: MailboxPosition
    ) -> MailboxPosition:
        """Mail committed by an earlier run that stopped before marking it."""
        if position.marked_uid >= position.uid:
            return position
        uids = await self._call(session.search, position.marked_uid, position.uid)
        await self._call(session.mark, uids, self._move_to())
        position = MailboxPosition(
            position.mailbox, position.uidvalidity, position.uid, position.uid
        )
        await ctx.ingest.set_mailbox_position(self.key, position)
        ctx.log.info("imap.marked_backlog", messages=len(uids))
        return position

    async def _read_new(
        self,
        ctx: ComponentContext,
        session: MailboxSession,
        position: MailboxPosition,
    ) -> MailboxPosition:
        uids = await self._call(session.search, position.uid)
        for batch in _batches(uids, self.config.batch_size):
            await self._take(ctx, session, batch, position)
            position = replace(position, uid=batch[-1], marked_uid=batch[-1])
            await ctx.ingest.set_mailbox_position(self.key, position)
        return position

    async def _take(
        self,
        ctx: ComponentContext,
        session: MailboxSession,
        uids: list[int],
        position: MailboxPosition | None,
    ) -> None:
        """Commit a batch a message at a time, each with the position past it (when the
        folder has one yet), then mark the batch."""
        cfg = self.config
        fetched: list[Fetched] = await self._call(session.fetch, uids, cfg.max_message_size)
        recipients = [cfg.support_address]
        backlog = self._backlog
        if backlog is None:  # start() sets it before this task runs
            raise RuntimeError("the imap connector was not started")
        done: list[int] = []
        for mail in fetched:
            past = replace(position, uid=mail.uid) if position else None
            if mail.raw is None:
                self._counters["too_large"] += 1
                ctx.log.warning(
                    "imap.too_large", uid=mail.uid, size=mail.size, limit=cfg.max_message_size
                )
                continue
            key = dedup_key(mail.raw, message_id_of(mail.raw))
            await backlog.place(len(mail.raw))  # pauses while normalizing lags behind
            try:
                raw_id = await ctx.ingest.accept_fetched_mail(
                    self.key, past, recipients, mail.raw, key
                )
            except BaseException:
                backlog.release(len(mail.raw))
                raise
            done.append(mail.uid)
            if raw_id is None:
                backlog.release(len(mail.raw))
                self._counters["already_held"] += 1
                continue
            self._counters["fetched"] += 1
            backlog.add(raw_id, mail.raw, recipients, key, None)
        await self._call(session.mark, done, self._move_to())

    def _move_to(self) -> str | None:
        return self.config.move_to if self.config.after_ingest == "move" else None


def _batches(uids: list[int], size: int) -> list[list[int]]:
    return [uids[i : i + size] for i in range(0, len(uids), size)]
