"""The `smtp` and `lmtp` connector types: aiosmtpd on the daemon's own event loop.

`smtp` takes mail directly (default 127.0.0.1:2525; port 25 through systemd: with
`listen = "systemd:NAME"` it serves on the socket helpline.socket passed, binding nothing);
`lmtp` sits behind an existing MTA (Postfix's `lmtp:` transport) on TCP or a
unix socket and answers once per recipient. LMTP is the same component with
another protocol class and reply shape, not a branch through the code.
Every limit is a config key: message size (SIZE in EHLO, 552 past it),
connections in total and per client (421 past them), the idle timeout, the
backlog of accepted mail not yet normalized (451 past it).
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import ssl
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from pydantic import Field, field_validator, model_validator

from connectors.mail import replies
from connectors.mail.backlog import Backlog
from connectors.mail.hooks import MailHandler, RecipientPolicy
from connectors.mail.normalize import MailIntake
from connectors.mail.smtp_protocol import FastLMTP, FastSMTP, session_factory
from gateway import socket_activation
from gateway.component import ComponentContext, ComponentState, Health, PermanentStartError
from gateway.config_types import Listen, ListenAddress, Secret, Section, parse_listen
from gateway.units import ByteSize, Duration

DRAIN_POLL = 0.05  # how often a stopping connector closes sessions done with their mail
STOP_GRACE = 0.5  # a session silent this long, with no mail under way, is closed on stop


class SmtpConfig(Section):
    listen: Listen = Field(default_factory=lambda: parse_listen("127.0.0.1:2525"))
    # The support addresses mail is taken for: "support@example.com" or "@help.example.com".
    # Everything else is refused at RCPT (550): never an open relay.
    recipients: list[str] = Field(min_length=1)
    hostname: str = ""  # in the greeting; empty: this machine's name
    max_message_size: ByteSize = 25 * 1024 * 1024
    # Mail accepted and not yet normalized into the stream, at most (count and bytes);
    # past either, DATA is answered 451 (the sender retries) and nothing is committed.
    max_backlog: int = Field(default=2000, ge=1, le=1_000_000)
    max_backlog_bytes: ByteSize = 256 * 1024 * 1024
    max_connections: int = Field(default=200, ge=1, le=100_000)
    max_connections_per_client: int = Field(default=20, ge=1, le=10_000)
    timeout: Duration = 300.0
    # On stop, how long a session in DATA may take to get its commit and its answer.
    drain_timeout: Duration = 3.0
    # STARTTLS with this certificate chain and key (PEM files); both or neither.
    tls_certificate: str = ""
    tls_key: str = ""
    # Refuse MAIL until the session switched to TLS.
    require_tls: bool = False
    # A relay that must log in: user name -> password (AUTH PLAIN/LOGIN). Empty: no AUTH.
    auth_users: dict[str, Secret] = Field(default_factory=dict)
    # Passwords only over TLS (they are sent in the clear otherwise).
    auth_require_tls: bool = True
    # The authserv-ids of the MTAs whose Authentication-Results are believed (the relay in
    # front of helpline). A DMARC pass there is verified sender evidence; a fail is flagged.
    trusted_authserv_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tls_pair(self) -> SmtpConfig:
        if bool(self.tls_certificate) != bool(self.tls_key):
            raise ValueError("give tls_certificate and tls_key together, or neither")
        if self.require_tls and not self.tls_certificate:
            raise ValueError("require_tls needs tls_certificate and tls_key")
        if self.auth_users and self.auth_require_tls and not self.tls_certificate:
            raise ValueError(
                "auth_users with auth_require_tls = true needs tls_certificate and tls_key"
            )
        return self

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            local, at, domain = entry.rpartition("@")
            if not at or "." not in domain or " " in entry or (local and local.startswith(".")):
                raise ValueError(
                    f"{entry!r} is not an address ('support@example.com') or a domain "
                    "('@help.example.com')"
                )
        return value


class _Authenticator:
    """AUTH PLAIN/LOGIN against the configured users, compared in constant time."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        wanted = self._users.get(auth_data.login.decode(errors="replace"), b"")
        ok = bool(wanted) and hmac.compare_digest(wanted, auth_data.password)
        return AuthResult(success=ok, handled=False)


class ConnectionLimits:
    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.by_client: Counter[str] = Counter()
        self.live: set[asyncio.Transport] = set()

    def admit(self, client: str) -> bool:
        if len(self.live) >= self.total or self.by_client[client] >= self.per_client:
            return False
        self.by_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]


class _Limited:
    """Counts a session against the limits; past them, 421 and close before the greeting."""

    limits: ConnectionLimits
    _client = ""
    _admitted = False
    last_active = 0.0  # time.monotonic() of the client's last bytes (a stop's grace)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.last_active = time.monotonic()
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) else "unix"
        if not self.limits.admit(self._client):
            transport.write((replies.TOO_MANY + "\r\n").encode())  # type: ignore[attr-defined]
            transport.close()
            return
        self._admitted = True
        self.limits.live.add(transport)  # type: ignore[arg-type]
        super().connection_made(transport)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        super().data_received(data)  # type: ignore[misc]

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return
        self.limits.release(self._client)
        self.limits.live.discard(self.transport)  # type: ignore[attr-defined]
        super().connection_lost(error)  # type: ignore[misc]


class _LimitedSMTP(_Limited, FastSMTP):
    pass


class _LimitedLMTP(_Limited, FastLMTP):
    pass


class SmtpConnector:
    config_model: ClassVar[type[SmtpConfig]] = SmtpConfig
    is_listener: ClassVar[bool] = True
    protocol: ClassVar[type[SMTP]] = _LimitedSMTP
    lmtp: ClassVar[bool] = False

    def __init__(self, name: str, config: SmtpConfig) -> None:
        self.name = name
        self.config = config
        self._servers: list[asyncio.AbstractServer] = []
        self._handler: MailHandler | None = None
        self._backlog: Backlog | None = None
        self._limits = ConnectionLimits(config.max_connections, config.max_connections_per_client)
        self._since = datetime.now(UTC)
        self._ctx: ComponentContext | None = None

    @property
    def key(self) -> str:
        return f"connectors.{self.name}"

    async def start(self, ctx: ComponentContext) -> None:
        self._ctx = ctx
        cfg = self.config

        own = RecipientPolicy(cfg.recipients)
        trusted = frozenset(a.lower() for a in cfg.trusted_authserv_ids)
        intake = MailIntake(ctx.ingest, f"/connectors/{self.name}", own, trusted)
        self._backlog = Backlog(
            intake,
            self.key,
            max_mails=cfg.max_backlog,
            max_bytes=cfg.max_backlog_bytes,
            spawn=ctx.create_task,
        )
        self._handler = MailHandler(self.key, ctx.ingest, own, self._backlog, self.lmtp)
        hostname = cfg.hostname or socket.getfqdn()
        tls = self._tls_context()
        users = {
            name: secret.get_secret_value().encode() for name, secret in cfg.auth_users.items()
        }

        new_session = session_factory(
            self.protocol,
            self._handler,
            data_size_limit=cfg.max_message_size,
            hostname=hostname,
            ident="helpline",
            timeout=cfg.timeout,
            tls_context=tls,
            require_starttls=cfg.require_tls,
            auth_required=bool(users),
            auth_require_tls=cfg.auth_require_tls,
            authenticator=_Authenticator(users) if users else None,
        )

        def make() -> SMTP:
            proto = new_session()
            proto.limits = self._limits  # type: ignore[attr-defined]
            return proto

        loop = asyncio.get_running_loop()
        try:
            self._servers = await self._listen(loop, make, cfg.listen)
        except socket_activation.SocketActivationError as err:
            raise PermanentStartError(str(err)) from err
        except OSError as err:
            raise PermanentStartError(f"cannot listen on {cfg.listen}: {err.strerror}") from err
        ctx.log.info("mail.listening", address=str(cfg.listen), lmtp=self.lmtp)
        ctx.create_task(self._backlog.run(), "normalize")

    def _tls_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if not cfg.tls_certificate:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cfg.tls_certificate, cfg.tls_key)
        except (OSError, ssl.SSLError) as err:
            raise PermanentStartError(
                f"cannot load tls_certificate {cfg.tls_certificate} / tls_key {cfg.tls_key}: {err}"
            ) from err
        return context

    @staticmethod
    async def _listen(
        loop: asyncio.AbstractEventLoop, make: Any, where: ListenAddress
    ) -> list[asyncio.AbstractServer]:
        if where.is_systemd:
            # Duplicates of systemd's sockets: closing them at stop leaves systemd's open,
            # so connections queue for the next start. Backlog= is kept (capped by the kernel).
            return [
                await loop.create_server(make, sock=sock, backlog=socket.SOMAXCONN)
                for sock in socket_activation.inherited().take(where.fd_name)
            ]
        if where.is_unix:
            return [await loop.create_unix_server(make, path=where.path)]
        return [await loop.create_server(make, host=where.host, port=where.port)]

    async def stop(self) -> None:
        """Stop accepting, let sessions with a mail under way (after MAIL FROM, or in DATA)
        finish it, and close each session as soon as it has none (421: try again)."""
        for server in self._servers:
            server.close()
        self._servers = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout
        while True:
            for transport in list(self._limits.live):
                if not _busy(transport):
                    _shut(transport)
            idle = self._handler is None or self._handler.idle.is_set()
            if (idle and not self._limits.live) or loop.time() >= deadline:
                break
            await asyncio.sleep(DRAIN_POLL)
        for transport in list(self._limits.live):
            _shut(transport)

    def health(self) -> Health:
        handler, backlog = self._handler, self._backlog
        counters = {
            "connections": len(self._limits.live),
            "accepted": handler.accepted if handler else 0,
            "refused_recipients": handler.refused if handler else 0,
            # Accepted and not yet in the stream; 451 answers because it was full.
            "backlog": backlog.size if backlog else 0,
            "backlog_refused": backlog.refused if backlog else 0,
            "normalized": backlog.normalized if backlog else 0,
        }
        return Health(ComponentState.RUNNING, self._since, None, counters)


def _busy(transport: asyncio.BaseTransport) -> bool:
    """Whether a stopping connector lets the session go on: a mail is under way (MAIL FROM
    given, not yet answered after DATA: aiosmtpd starts a fresh envelope once a mail is
    done or reset), or the client spoke within STOP_GRACE (a client just greeted is about
    to send MAIL: cutting it there would make an MTA retry minutes later)."""
    session = transport.get_protocol()
    envelope = getattr(session, "envelope", None)
    if envelope is not None and envelope.mail_from is not None:
        return True
    return time.monotonic() - getattr(session, "last_active", 0.0) < STOP_GRACE


def _shut(transport: asyncio.BaseTransport) -> None:
    if not transport.is_closing():
        if isinstance(transport, asyncio.WriteTransport):
            transport.write((replies.SHUTTING_DOWN + "\r\n").encode())
        transport.close()


class LmtpConfig(SmtpConfig):
    listen: Listen = Field(default_factory=lambda: parse_listen("127.0.0.1:2424"))


class LmtpConnector(SmtpConnector):
    config_model: ClassVar[type[SmtpConfig]] = LmtpConfig
    protocol: ClassVar[type[SMTP]] = _LimitedLMTP
    lmtp: ClassVar[bool] = True
