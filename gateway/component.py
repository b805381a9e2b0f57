"""The one lifecycle every connector and backend follows, and what it is given.

`start()` returns once the component serves (a listener is bound and
accepting; an outbound component runs its loop). Reaching a remote peer is
part of `health()`, never of `start()`, so a helpdesk that is down cannot hold
up the daemon's readiness. `stop()` is idempotent and bounded.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from gateway.times import rfc3339

if TYPE_CHECKING:
    import structlog

    from gateway.delivery.board import BackendHandle
    from gateway.ingest import Ingestor
    from gateway.replies import Replies
    from gateway.stream import StreamReader


class ComponentState(enum.Enum):
    """Where a component is in its life; `recoverable` says whether it retries."""

    NOT_STARTED = ("not_started", True)
    STARTING = ("starting", True)
    RUNNING = ("running", True)
    DEGRADED = ("degraded", True)  # serving, but its peer is unreachable
    RETRYING = ("retrying", True)  # start failed for a reason that may pass
    FAILED = ("failed", False)  # config or credentials wrong: no retry until reload
    STOPPING = ("stopping", True)
    STOPPED = ("stopped", True)

    def __init__(self, label: str, recoverable: bool) -> None:
        self.label = label
        self.recoverable = recoverable


@dataclass(frozen=True, slots=True)
class Health:
    """An immutable snapshot for /readyz, /metrics and systemd's STATUS=."""

    state: ComponentState
    since: datetime
    last_error: str | None = None
    counters: Mapping[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state.label,
            "since": rfc3339(self.since),
            "last_error": self.last_error,
            "counters": dict(self.counters),
        }


class StartError(Exception):
    """A start failure that may pass (peer down, port briefly taken): retried."""


class PermanentStartError(StartError):
    """Wrong config or credentials: retrying cannot help, so the supervisor stops."""


@dataclass(frozen=True, slots=True)
class ComponentContext:
    """What the daemon hands a component at start: the core's entry points and a task owner."""

    name: str
    ingest: Ingestor
    replies: Replies
    stream: StreamReader
    log: structlog.stdlib.BoundLogger
    create_task: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]
    # Serve a path prefix on the daemon's HTTP listener (a webhook, a form) until stopped.
    add_route: Callable[[str, Callable[..., Awaitable[Any]]], None]
    # A backend's engine, ticket map and durable values; None for a connector.
    backend: BackendHandle | None = None


@runtime_checkable
class Component(Protocol):
    """A connector or backend, as the supervisor drives it."""

    name: str

    async def start(self, ctx: ComponentContext) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> Health: ...


class ComponentFactory(Protocol):
    """A component class: it declares its config section's model and builds from it."""

    config_model: ClassVar[type[BaseModel]]

    def __call__(self, name: str, config: Any) -> Component: ...
