"""Listening sockets passed by systemd (socket activation), taken by name.

systemd binds the sockets of helpline.socket itself (port 25 needs no privilege
in helpline then), passes them as file descriptors 3 and up, and says so in
LISTEN_FDS, LISTEN_FDNAMES (the units' FileDescriptorName=) and LISTEN_PID. A
listener whose config says `listen = "systemd:NAME"` takes the sockets of that
name instead of binding. systemd keeps its own copy of every socket while the
service restarts, so connections queue in the kernel rather than being refused.

The environment is read once per process and then removed, and the descriptors
are made close-on-exec, so a child process never believes they are its own. Each
listener gets a duplicate of a socket: closing it (at stop, or when a component
restarts) leaves the original here, for the next start.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog

from gateway.config import Config
from gateway.config_types import ListenAddress

FIRST_FD = 3  # SD_LISTEN_FDS_START
ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
UNNAMED = "unknown"  # what sd_listen_fds_with_names reports without LISTEN_FDNAMES

log = structlog.get_logger("gateway.systemd")


class SocketActivationError(Exception):
    """The sockets systemd passed do not fit the config: a start error, not retried."""


class Inherited:
    """The listening sockets this process was given, by name."""

    def __init__(self, sockets: Mapping[str, list[socket.socket]]) -> None:
        self._sockets = dict(sockets)
        self._taken: set[str] = set()

    def names(self) -> list[str]:
        return sorted(self._sockets)

    def _passed(self) -> str:
        names = self.names()
        return "passed: " + ", ".join(names) if names else "systemd passed no sockets"

    def take(self, name: str) -> list[socket.socket]:
        """Duplicates of the listening sockets named `name`, for one listener to serve on."""
        held = self._sockets.get(name)
        if not held:
            raise SocketActivationError(
                f"no socket named {name!r} was passed by systemd ({self._passed()}); "
                "check FileDescriptorName= in the .socket unit"
            )
        self._taken.add(name)
        return [sock.dup() for sock in held]

    def check(self, wanted: Mapping[str, str]) -> None:
        """Every `systemd:NAME` of the config (name -> config key) was passed; before any
        listener starts, so a mismatch stops the start instead of a listener failing."""
        missing = [f"{key} = systemd:{name}" for name, key in wanted.items() if name not in self]
        if missing:
            raise SocketActivationError(
                f"{'; '.join(missing)}: no such socket ({self._passed()}); "
                "check FileDescriptorName= in the .socket unit"
            )

    def unused(self) -> list[str]:
        return [name for name in self.names() if name not in self._taken]

    def warn_unused(self) -> None:
        for name in self.unused():
            log.warning(
                "systemd.socket_unused",
                name=name,
                hint=f'no listener says listen = "systemd:{name}"; nothing accepts on it',
            )

    def __contains__(self, name: object) -> bool:
        return name in self._sockets


def receive(environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> Inherited:
    """The sockets in LISTEN_FDS/LISTEN_FDNAMES if LISTEN_PID is this process; the
    variables are removed either way (they are meant for one process only)."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    values = {key: env.pop(key, "") for key in ENV}
    pid = os.getpid() if pid is None else pid
    if not values["LISTEN_PID"] or not values["LISTEN_FDS"]:
        return Inherited({})
    if values["LISTEN_PID"] != str(pid):
        log.info("systemd.sockets_not_ours", listen_pid=values["LISTEN_PID"], pid=pid)
        return Inherited({})
    count_text = values["LISTEN_FDS"]
    if not count_text.isdigit():
        raise SocketActivationError(f"LISTEN_FDS={count_text!r} is not a number")
    count = int(count_text)
    names = values["LISTEN_FDNAMES"].split(":") if values["LISTEN_FDNAMES"] else []
    if names and len(names) != count:
        raise SocketActivationError(
            f"LISTEN_FDNAMES names {len(names)} sockets but LISTEN_FDS is {count}"
        )
    sockets: dict[str, list[socket.socket]] = {}
    for index in range(count):
        fd = FIRST_FD + index
        name = names[index] if names else UNNAMED
        sockets.setdefault(name, []).append(_listening_socket(fd, name))
    log.info("systemd.sockets", names=sorted(sockets), count=count)
    return Inherited(sockets)


def _listening_socket(fd: int, name: str) -> socket.socket:
    try:
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
    except OSError as err:
        raise SocketActivationError(f"fd {fd} ({name}) is not a socket: {err.strerror}") from err
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise SocketActivationError(
            f"fd {fd} ({name}) is not a listening stream socket "
            "(ListenStream= with Accept=no is what helpline serves on)"
        )
    return sock


@functools.cache
def inherited() -> Inherited:
    """This process's sockets, read from the environment on first use."""
    return receive()


def wanted(http: ListenAddress, components: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """`systemd:NAME` listeners of the config: name -> the config key that names it.

    `components` are (config section key, settings model) pairs; any field of a
    settings model holding a listen address counts. A name used twice is an error:
    two protocols cannot share one listening socket.
    """
    found: dict[str, str] = {}
    listeners = [("http.listen", http)]
    for key, settings in components:
        for field, value in settings:
            listeners.append((f"{key}.{field}", value))
    for key, where in listeners:
        if not isinstance(where, ListenAddress) or not where.is_systemd:
            continue
        if where.fd_name in found:
            raise SocketActivationError(
                f"{found[where.fd_name]} and {key} both listen on systemd:{where.fd_name}; "
                "give each listener its own socket"
            )
        found[where.fd_name] = key
    return found


def for_config(config: Config) -> Inherited:
    """This process's sockets, checked against every `systemd:NAME` in the config."""
    sockets = inherited()
    specs = ((spec.key, spec.settings) for spec in config.components)
    sockets.check(wanted(config.core.http.listen, specs))
    return sockets
