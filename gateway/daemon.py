"""The daemon: opens the store, serves HTTP, supervises components, drains on SIGTERM.

Signal handlers only record; this module's loop acts on them. Shutdown runs
in one bounded order: stop accepting, let in-flight requests and components
finish (up to [daemon] drain_timeout), then commit what was accepted and
close the store. A second SIGTERM or SIGINT skips the wait. Under systemd it
reports READY/STATUS/RELOADING/STOPPING and pings the watchdog (gateway.service),
and serves on the sockets systemd passed where the config says "systemd:NAME"
(gateway.socket_activation).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gateway import registry, reload, socket_activation
from gateway.component import ComponentContext, ComponentState
from gateway.config import Config, ConfigError, CoreConfig, load_config
from gateway.delivery.board import DeliveryBoard
from gateway.erasure import expire_content, expire_raw_mail
from gateway.first_response.tracker import FirstResponseTracker
from gateway.ingest import Ingestor
from gateway.metrics import Metrics
from gateway.replies import Replies
from gateway.service import Service
from gateway.state_lock import StateLock
from gateway.store import Tx, sqlite_path
from gateway.store.sqlite import SqliteStore
from gateway.stream import StreamNotifier, StreamReader
from gateway.supervisor import Supervisor
from gateway.times import rfc3339
from gateway.web.app import ComponentRoutes, build_app
from gateway.web.auth import TokenTable, token_path
from gateway.web.context import WebContext
from gateway.web.proxies import ProxyRules

IDEMPOTENCY_SWEEP_INTERVAL = 3600.0
FIRST_SWEEP = 60.0  # not in the way of a start-up backlog
# At stop, how long a connection accepted just before has to send its request; what
# keeps a restart on systemd's held sockets from resetting a connection.
ACCEPT_GRACE = 0.25

log = structlog.get_logger("gateway.daemon")


class Daemon:
    def __init__(
        self,
        config: Config,
        state_dir: Path,
        *,
        config_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self._state_lock = StateLock(sqlite_path(config.core.store.url, state_dir))
        self._config_path = config_path
        self._clock = clock
        self.metrics = Metrics()
        self.notifier = StreamNotifier()
        self.routes = ComponentRoutes()
        self._supervisors: dict[str, Supervisor] = {}
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._reload = asyncio.Event()
        self._listening = False
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.service = Service()

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status is 0 after a clean drain."""
        self._install_signals()
        await self.start()
        try:
            while not self._stop.is_set():
                await self._wait_for_signal()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    self.service.reloading()
                    await self.reload()
                    await self.service.reloaded()
        finally:
            await self.stop()
        return 0

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)

    def request_stop(self) -> None:
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    async def _wait_for_signal(self) -> None:
        waits = [asyncio.create_task(e.wait()) for e in (self._stop, self._reload)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def start(self) -> None:
        """Open the store and start serving; returns once HTTP accepts (READY)."""
        core = self.config.core
        self._state_lock.acquire()
        try:
            await self._open(core)
        except BaseException:
            self._state_lock.release()
            raise

    async def _open(self, core: CoreConfig) -> None:
        self.sockets = socket_activation.for_config(self.config)
        self.store = SqliteStore(
            sqlite_path(core.store.url, self.state_dir),
            durability=core.store.durability,
            max_pending=core.store.max_pending,
            max_batch=core.store.max_batch,
            recent_bands=core.near_duplicates.link_index_entries,
            checkpoint_interval=core.store.checkpoint_interval,
            on_commit=self.notifier.committed,
            on_batch=self.metrics.observe_commit,
        )
        await self.store.open()
        self.notifier.head = self.store.head_offset()
        self.ingestor = Ingestor(self.store, core, self.metrics, self._clock)
        self.replies = Replies(self.store, core, self._clock)
        self.reader = StreamReader(self.store, self.notifier)
        self.board = DeliveryBoard(self.store, self.reader, self._clock)
        self.board.configured = _backend_types(self.config)
        self.first_response = FirstResponseTracker(
            self.store, self.notifier, core, self.metrics, self._clock
        )
        self.web = WebContext(
            store=self.store,
            ingestor=self.ingestor,
            replies=self.replies,
            reader=self.reader,
            notifier=self.notifier,
            metrics=self.metrics,
            tokens=TokenTable.from_config(core.http, self.state_dir),
            config=core,
            readiness=self.readiness,
            proxies=ProxyRules(core.http.trusted_proxies, core.http.public_url),
            board=self.board,
        )
        if not core.http.tokens:
            log.info(
                "api.token",
                token_file=str(token_path(self.state_dir)),
                hint="`helpline token` prints it",
            )
        try:
            await self._serve_http()
        except OSError as err:
            log.error("http.bind_failed", listen=str(core.http.listen), error=str(err))
            if self._runner is not None:
                await self._runner.cleanup()
            await self.store.close()
            raise
        await self.first_response.start()  # emits the breaches that fell due while down
        for spec in self.config.components:
            await self._start_component(spec)
        self._sweeper = asyncio.create_task(self._maintain(), name="maintenance")
        self.sockets.warn_unused()
        self.service.start(self.readiness, self.board)
        self.ready.set()
        log.info(
            "daemon.ready",
            listen=str(core.http.listen),
            state_dir=str(self.state_dir),
            components=len(self._supervisors),
            head_offset=self.store.head_offset(),
        )

    async def _serve_http(self) -> None:
        http = self.config.core.http
        app = build_app(self.web, self.routes)
        self._runner = web.AppRunner(
            app,
            shutdown_timeout=self.config.core.daemon.drain_timeout,
            keepalive_timeout=http.keepalive_timeout,
            access_log=None,
        )
        await self._runner.setup()
        sites: list[web.BaseSite]
        if http.listen.is_systemd:
            # systemd's backlog (Backlog=) is kept: listen() only caps it at somaxconn.
            sites = [
                web.SockSite(self._runner, sock, backlog=socket.SOMAXCONN)
                for sock in self.sockets.take(http.listen.fd_name)
            ]
        elif http.listen.is_unix:
            sites = [web.UnixSite(self._runner, http.listen.path)]
        else:
            sites = [
                web.TCPSite(self._runner, http.listen.host, http.listen.port, reuse_address=True)
            ]
        for site in sites:
            await site.start()
            log.info("http.listening", address=site.name, listen=str(http.listen))
        self._listening = True

    def _context_for(self, supervisor: Supervisor) -> ComponentContext:
        return ComponentContext(
            name=supervisor.name,
            ingest=self.ingestor,
            replies=self.replies,
            stream=self.reader,
            log=supervisor.log,
            create_task=supervisor.create_task,
            add_route=self.routes.adder(supervisor.spec.key),
            backend=(
                self.board.handle(supervisor.name, supervisor.spec.type)
                if supervisor.spec.kind == "backend"
                else None
            ),
        )

    async def _start_component(self, spec: Any) -> None:
        factory = registry.resolve(spec.kind, spec.type)
        supervisor = Supervisor(
            spec,
            factory,
            self._context_for,
            self.config.core.daemon.stop_timeout,
            on_error=lambda name: self.metrics.connector_errors.labels(name).inc(),
        )
        self._supervisors[spec.key] = supervisor
        await supervisor.start()

    async def _stop_component(self, key: str) -> None:
        supervisor = self._supervisors.pop(key, None)
        if supervisor is not None:
            await supervisor.stop()
        self.routes.remove_owner(key)

    async def reload(self) -> bool:
        """Apply a changed config; an invalid one is refused and the old one keeps running."""
        log.info("daemon.reloading", config=str(self._config_path))
        try:
            new = load_config(self._config_path)
        except ConfigError as err:
            for problem in err.problems:
                log.error(
                    "config.problem", key=problem.path, line=problem.line, problem=problem.message
                )
            log.error(
                "daemon.reload_refused",
                problems=len(err.problems),
                hint="the running configuration is unchanged",
            )
            return False
        steps = reload.plan(self.config, new)
        for key in steps.restart_required:
            log.warning(
                "daemon.restart_required",
                key=key,
                hint="this key is read at start; restart helpline to apply it",
            )
        core = new.core
        self.web.tokens = TokenTable.from_config(core.http, self.state_dir)
        self.web.proxies = ProxyRules(core.http.trusted_proxies, core.http.public_url)
        self.web.config = core
        self.ingestor.config = core
        self.replies.config = core
        self.first_response.config = core
        self.board.configured = _backend_types(new)
        for key in steps.stop:
            await self._stop_component(key)
        for spec in steps.start:
            await self._start_component(spec)
        self.config = new
        log.info(
            "daemon.reloaded",
            stopped=list(steps.stop),
            started=[s.key for s in steps.start],
            unchanged=list(steps.unchanged),
        )
        return True

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        store = self.store.health()
        components = {key: sup.health() for key, sup in self._supervisors.items()}
        listeners_ok = self._listening and all(
            components[key].state in (ComponentState.RUNNING, ComponentState.DEGRADED)
            for key, sup in self._supervisors.items()
            if sup.is_listener
        )
        ready = store.writable and listeners_ok and not self._stop.is_set()
        degraded = any(h.state is not ComponentState.RUNNING for h in components.values())
        for key, sup in self._supervisors.items():
            up = components[key].state in (ComponentState.RUNNING, ComponentState.DEGRADED)
            self.metrics.component_up.labels(sup.name, sup.spec.kind).set(1 if up else 0)
            for counter, value in components[key].counters.items():
                self.metrics.component_counter.labels(sup.name, counter).set(value)
        status = "unready" if not ready else "degraded" if degraded else "ready"
        return ready, {
            "status": status,
            "time": rfc3339(datetime.now(UTC)),
            "store": {
                "writable": store.writable,
                "last_error": store.last_error,
                "pending_writes": store.pending,
                "head_offset": store.head_offset,
            },
            "http": {"listening": self._listening},
            "components": {key: health.as_json() for key, health in components.items()},
        }

    async def sweep(self) -> None:
        """Forget expired idempotency keys, tombstone content past its retention and drop
        finished raw mail past its own."""
        core, now = self.config.core, self._clock()
        try:
            removed = await self.store.expire_idempotency(now - core.ingest.idempotency_window)
            if removed:
                log.info("ingest.idempotency_expired", removed=removed)
            near = core.near_duplicates
            horizon = now - max(near.window, near.anonymous_window)

            async def forget(tx: Tx) -> int:
                return await tx.forget_fingerprints(horizon)

            await self.store.write(forget)
            cutoff = now - core.retention.message_content
            expired = await expire_content(self.store.write, cutoff, now)

            async def forget_deliveries(tx: Tx) -> int:
                return await tx.forget_delivered(cutoff)

            await self.store.write(forget_deliveries)
            if expired:
                log.info("retention.content_expired", events=expired)
            removed = await expire_raw_mail(self.store.write, now - core.retention.raw_mail)
            if removed:
                log.info("retention.raw_mail_removed", removed=removed)
        except Exception as err:  # noqa: BLE001 - retried at the next sweep
            log.warning("maintenance.sweep_failed", error=f"{type(err).__name__}: {err}")

    async def _maintain(self) -> None:
        await asyncio.sleep(FIRST_SWEEP)
        while True:
            await self.sweep()
            retention = self.config.core.retention.sweep_interval
            await asyncio.sleep(min(IDEMPOTENCY_SWEEP_INTERVAL, retention))

    async def _bounded(self, coro: Any, what: str) -> None:
        """Run a shutdown step, abandoning it if a second signal asks to hurry."""
        task = asyncio.ensure_future(coro)
        force = asyncio.create_task(self._force.wait())
        await asyncio.wait({task, force}, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        if not task.done():
            log.warning("daemon.drain_skipped", step=what)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif task.exception() is not None:
            log.error("daemon.shutdown_step_failed", step=what, error=str(task.exception()))

    @staticmethod
    async def _stop_http(runner: web.AppRunner) -> None:
        """Stop accepting, give connections accepted a moment ago the time to send their
        request (aiohttp closes a connection without one at once), then drain the rest."""
        for site in list(runner.sites):
            await site.stop()
        if runner.server is not None and runner.server.connections:
            await asyncio.sleep(ACCEPT_GRACE)
        await runner.cleanup()

    async def stop(self) -> None:
        """The bounded shutdown order: stop accepting, drain, commit, close the store."""
        log.info("daemon.stopping", drain_timeout=self.config.core.daemon.drain_timeout)
        self.service.stopping()
        started = time.monotonic()
        if self._sweeper is not None:
            self._sweeper.cancel()
        steps = [self._stop_component(key) for key in list(self._supervisors)]
        if self._runner is not None:
            steps.append(self._stop_http(self._runner))
        self._listening = False
        await self._bounded(asyncio.gather(*steps), "drain")
        await self._bounded(self.first_response.stop(), "first_response")
        await self._bounded(self.store.close(), "store")
        self._state_lock.release()
        await self.service.close()
        log.info(
            "daemon.stopped",
            seconds=round(time.monotonic() - started, 3),
            head_offset=self.store.head_offset(),
        )


def _backend_types(config: Config) -> dict[str, str]:
    return {spec.name: spec.type for spec in config.components if spec.kind == "backend"}
