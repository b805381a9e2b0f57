"""What the HTTP handlers share: the core's services, held on the aiohttp app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.config import CoreConfig
from gateway.delivery.board import DeliveryBoard
from gateway.ingest import Ingestor
from gateway.metrics import Metrics
from gateway.replies import Replies
from gateway.store import Store
from gateway.stream import StreamNotifier, StreamReader
from gateway.web.auth import TokenTable
from gateway.web.proxies import ProxyRules


@dataclass(slots=True)
class WebContext:
    store: Store
    ingestor: Ingestor
    replies: Replies
    reader: StreamReader
    notifier: StreamNotifier
    metrics: Metrics
    tokens: TokenTable  # replaced on reload
    config: CoreConfig  # replaced on reload
    readiness: Callable[[], tuple[bool, dict[str, Any]]]
    proxies: ProxyRules  # replaced on reload
    board: DeliveryBoard
    shutting_down: bool = False


CONTEXT: web.AppKey[WebContext] = web.AppKey("helpline", WebContext)


def context(request: web.Request) -> WebContext:
    return request.app[CONTEXT]
