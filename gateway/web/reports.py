"""Reports over the store: `GET /v1/reports/first-response` (docs/first-response.md, "Report")."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from gateway.config import CHANNELS
from gateway.errors import InvalidInput
from gateway.first_response.report import build_report
from gateway.units import parse_duration
from gateway.web.api import _json, choice_param
from gateway.web.context import context

DEFAULT_SINCE = "7d"
_TRUE = ("true", "1")
_FALSE = ("false", "0")


def since_param(request: web.Request, now: float) -> float:
    """`since` as a duration back from now ("7d", "24h", "30m") or an RFC 3339 instant."""
    raw = request.query.get("since", "") or DEFAULT_SINCE
    try:
        seconds = parse_duration(raw)
    except ValueError:
        pass
    else:
        if seconds <= 0:
            raise InvalidInput("since", f"a duration must be longer than zero, not {raw[:40]!r}")
        return max(0.0, now - seconds)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInput(
            "since",
            "must be a duration such as 7d, 24h or 30m, or an RFC 3339 time with its "
            f"offset such as 2026-11-16T00:00:00Z, not {raw[:40]!r}",
        )
    at = moment.timestamp()
    if at >= now:
        raise InvalidInput("since", f"{raw[:40]!r} is not before now")
    return max(0.0, at)


def bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE or raw == "":
        return False
    raise InvalidInput(name, f"must be true or false, not {raw[:40]!r}")


async def first_response(request: web.Request) -> web.Response:
    ctx = context(request)
    ctx.tokens.caller(request)
    now = ctx.ingestor.now()
    since = since_param(request, now)
    channel = choice_param(request, "channel", CHANNELS)
    business_hours = bool_param(request, "business_hours")
    report = await build_report(
        ctx.store, ctx.config, now, since=since, channel=channel, business_hours=business_hours
    )
    return _json(report)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/reports/first-response", first_response)
