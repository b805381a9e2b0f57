"""Liveness, readiness and metrics: what an operator's monitoring reads.

/readyz fails only when helpline cannot accept (store not writable, a
listener not bound); a backend or mailbox that is down shows as "degraded"
in the body and in /metrics, and never takes intake out of rotation.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.config import secret_value
from gateway.web.context import context

LOOPBACK = ("127.", "::1", "localhost")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, body = context(request).readiness()
    return web.Response(
        body=orjson.dumps(body), status=200 if ready else 503, content_type="application/json"
    )


def _metrics_allowed(request: web.Request) -> bool:
    ctx = context(request)
    http = ctx.config.http
    wanted = secret_value(http.metrics_token)
    header = request.headers.get("Authorization", "")
    if wanted is not None:
        given = header.partition(" ")[2].strip()
        return hmac.compare_digest(
            hashlib.sha256(given.encode()).digest(), hashlib.sha256(wanted.encode()).digest()
        )
    if http.listen.is_unix or http.listen.host.startswith(LOOPBACK):
        return True
    ctx.tokens.caller(request)  # elsewhere, without a metrics token: an API token is needed
    return True


async def metrics(request: web.Request) -> web.Response:
    if not _metrics_allowed(request):
        raise web.HTTPUnauthorized(reason="Unauthorized", text="wrong [http] metrics_token")
    ctx = context(request)
    ctx.readiness()  # brings the component gauges up to date
    store = ctx.store.health()
    ctx.metrics.pending_ingests.set(store.pending)
    ctx.metrics.stream_head.set(store.head_offset)
    ctx.metrics.store_writable.set(1 if store.writable else 0)
    keys, oldest = await ctx.store.idempotency_stats()
    ctx.metrics.idempotency_keys.set(keys)
    ctx.metrics.idempotency_oldest.set(ctx.ingestor.now() - oldest if oldest is not None else 0)
    names = ctx.board.names()
    ctx.metrics.forget_backends(set(names))
    for name in names:
        ctx.metrics.observe_backend((await ctx.board.view(name)).as_json())
    return web.Response(
        body=ctx.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@functools.cache
def _openapi_document() -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(
        (resources.files("gateway.web") / "openapi.json").read_bytes()
    )
    return parsed


async def openapi(request: web.Request) -> web.Response:
    """The API description, its `servers` entry naming how this client reaches helpline."""
    ctx = context(request)
    document = {**_openapi_document(), "servers": [{"url": ctx.proxies.base_url(request)}]}
    return web.Response(body=orjson.dumps(document), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/openapi.json", openapi)
