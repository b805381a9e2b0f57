"""Backends over HTTP: lag, in-flight, retries and dead letters (`helpline backends`).

Dead letters are events a backend refused for good; an operator reads why,
then replays one (or all) after fixing the cause, or drops it.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.delivery.board import DeliveryBoard, letter_json
from gateway.errors import InvalidInput
from gateway.web.api import _json
from gateway.web.context import context


def _board(request: web.Request) -> DeliveryBoard:
    ctx = context(request)
    ctx.tokens.caller(request)
    return ctx.board


def _offset(request: web.Request) -> int:
    raw = request.match_info["offset"]
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput("offset", f"must be a stream offset (a whole number), not {raw[:40]!r}")
    return int(raw)


async def list_backends(request: web.Request) -> web.Response:
    board = _board(request)
    views = [await board.view(name) for name in board.names()]
    return _json({"backends": [view.as_json() for view in views]})


async def get_backend(request: web.Request) -> web.Response:
    board = _board(request)
    view = await board.view(request.match_info["backend"])
    return _json(view.as_json())


async def list_dead_letters(request: web.Request) -> web.Response:
    board = _board(request)
    conversation = request.query.get("conversation_id") or None
    letters = await board.dead_letters(request.match_info["backend"], conversation)
    return _json({"dead_letters": [letter_json(letter) for letter in letters]})


async def get_dead_letter(request: web.Request) -> web.Response:
    board = _board(request)
    letter, body = await board.dead_letter(request.match_info["backend"], _offset(request))
    shown = letter_json(letter)
    shown["event"] = orjson.loads(body) if body is not None else None
    return _json(shown)


async def replay_one(request: web.Request) -> web.Response:
    board = _board(request)
    count = await board.replay(request.match_info["backend"], _offset(request))
    return _json({"replaying": count}, status=202)


async def replay_all(request: web.Request) -> web.Response:
    board = _board(request)
    count = await board.replay(request.match_info["backend"], None)
    return _json({"replaying": count}, status=202)


async def drop_dead_letter(request: web.Request) -> web.Response:
    board = _board(request)
    await board.drop(request.match_info["backend"], _offset(request))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/backends", list_backends)
    app.router.add_get("/v1/backends/{backend}", get_backend)
    app.router.add_get("/v1/backends/{backend}/dead-letters", list_dead_letters)
    app.router.add_post("/v1/backends/{backend}/dead-letters/replay", replay_all)
    app.router.add_get("/v1/backends/{backend}/dead-letters/{offset}", get_dead_letter)
    app.router.add_post("/v1/backends/{backend}/dead-letters/{offset}/replay", replay_one)
    app.router.add_delete("/v1/backends/{backend}/dead-letters/{offset}", drop_dead_letter)
