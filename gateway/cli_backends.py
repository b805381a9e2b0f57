"""`helpline backends` and `helpline dead-letters`: the delivery side, from a terminal.

Both talk to the running daemon's HTTP API (GET /v1/backends and the
dead-letter routes), like every other command that reads live state, so what
an operator sees is what /readyz and /metrics see.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

EX_OK = 0
EX_FAILURE = 1

Client = Callable[[argparse.Namespace, Any], tuple[aiohttp.ClientSession, str, dict[str, str]]]
Work = Callable[[argparse.Namespace, Any], Coroutine[Any, Any, int]]

BACKEND_COLUMNS = (
    ("backend", 12),
    ("type", 9),
    ("state", 9),
    ("lag", 7),
    ("oldest", 7),
    ("in flight", 9),
    ("retries", 7),
    ("dead", 5),
)
LETTER_COLUMNS = (
    ("backend", 12),
    ("offset", 8),
    ("type", 34),
    ("status", 6),
    ("tries", 5),
    ("parked", 20),
)


def _line(cells: Sequence[str], columns: Sequence[tuple[str, int]]) -> str:
    return "  ".join(
        f"{cell:<{width}}" if i in (0, 2) else f"{cell:>{width}}"
        for i, (cell, (_, width)) in enumerate(zip(cells, columns, strict=True))
    ).rstrip()


def backends_table(body: dict[str, Any], seconds: Callable[[float | None], str]) -> str:
    lines = [_line([name for name, _ in BACKEND_COLUMNS], BACKEND_COLUMNS)]
    for b in body["backends"]:
        cells = (
            b["name"],
            b["type"],
            b["state"],
            str(b["lag_events"]),
            seconds(b["lag_seconds"]) if b["lag_events"] else "-",
            str(b["in_flight"]),
            str(b["retries"]),
            str(b["dead_letters"]),
        )
        lines.append(_line(cells, BACKEND_COLUMNS))
        if b.get("last_error"):
            lines.append(f"  last error: {b['last_error']}")
    if not body["backends"]:
        lines.append("(no backends configured)")
    return "\n".join(lines) + "\n"


def letters_table(letters: list[dict[str, Any]]) -> str:
    lines = [_line([name for name, _ in LETTER_COLUMNS], LETTER_COLUMNS)]
    for d in letters:
        cells = (
            d["backend"],
            str(d["offset"]),
            d["type"],
            "-" if d["status"] is None else str(d["status"]),
            str(d["attempts"]),
            d["parked_at"][:19],
        )
        lines.append(_line(cells, LETTER_COLUMNS))
        lines.append(f"  {d['error']}" + ("  (replay requested)" if d["replay_requested"] else ""))
    if not letters:
        lines.append("(no dead letters)")
    return "\n".join(lines) + "\n"


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str]
) -> tuple[int, Any]:
    async with session.request(method, url, headers=headers) as resp:
        raw = await resp.read()
    return resp.status, orjson.loads(raw) if raw.strip() else None


def _failed(status: int, body: Any) -> int:
    detail = body.get("detail") if isinstance(body, dict) else body
    print(f"helpline: {status}: {detail}", file=sys.stderr)
    return EX_FAILURE


def make_commands(client: Client, seconds: Callable[[float | None], str]) -> tuple[Work, Work]:
    """The two commands' work, given the CLI's HTTP client factory and time format."""

    async def backends(args: argparse.Namespace, config: Any) -> int:
        session, base, headers = client(args, config)
        async with session:
            status, body = await _call(session, "GET", base + "/v1/backends", headers)
        if status != 200:
            return _failed(status, body)
        if args.format == "json":
            print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        else:
            sys.stdout.write(backends_table(body, seconds))
        return EX_OK

    async def dead_letters(args: argparse.Namespace, config: Any) -> int:
        session, base, headers = client(args, config)
        async with session:
            return await _dead_letters(session, base, headers, args)

    return backends, dead_letters


async def _dead_letters(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str], args: argparse.Namespace
) -> int:
    name = quote(args.backend or "", safe="")
    root = f"{base}/v1/backends/{name}/dead-letters"
    if args.action == "list":
        names = [args.backend] if args.backend else None
        if names is None:
            status, body = await _call(session, "GET", base + "/v1/backends", headers)
            if status != 200:
                return _failed(status, body)
            names = [b["name"] for b in body["backends"]]
        letters: list[dict[str, Any]] = []
        for each in names:
            status, body = await _call(
                session, "GET", f"{base}/v1/backends/{quote(each, safe='')}/dead-letters", headers
            )
            if status != 200:
                return _failed(status, body)
            letters.extend(body["dead_letters"])
        if args.format == "json":
            print(orjson.dumps(letters, option=orjson.OPT_INDENT_2).decode())
        else:
            sys.stdout.write(letters_table(letters))
        return EX_OK
    if args.action == "replay" and args.all:
        status, body = await _call(session, "POST", f"{root}/replay", headers)
    elif args.offset is None:
        print(f"helpline: dead-letters {args.action} needs BACKEND and OFFSET", file=sys.stderr)
        return 2
    elif args.action == "show":
        status, body = await _call(session, "GET", f"{root}/{args.offset}", headers)
    elif args.action == "replay":
        status, body = await _call(session, "POST", f"{root}/{args.offset}/replay", headers)
    else:
        status, body = await _call(session, "DELETE", f"{root}/{args.offset}", headers)
    if status >= 400:
        return _failed(status, body)
    if args.action == "show":
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    elif args.action == "replay":
        print(f"{body['replaying']} dead letter(s) of {args.backend} will be delivered again")
    else:
        print(f"dropped: {args.backend} will never get offset {args.offset}")
    return EX_OK


def add_parsers(
    sub: Any,
    common: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace, Work], int],
    client: Client,
    seconds: Callable[[float | None], str],
) -> None:
    backends_work, letters_work = make_commands(client, seconds)

    def remote(p: argparse.ArgumentParser) -> None:
        common(p)
        p.add_argument("--url", help="the daemon's base URL (default: from the config)")
        p.add_argument("--token", help="API token (default: $HELPLINE_TOKEN or the state dir)")

    backends = sub.add_parser(
        "backends", help="each backend's lag, in-flight deliveries, retries and dead letters"
    )
    remote(backends)
    backends.add_argument("--format", choices=["table", "json"], default="table")
    backends.set_defaults(func=lambda args: run(args, backends_work))

    letters = sub.add_parser(
        "dead-letters", help="list, show, replay or drop events a backend refused for good"
    )
    remote(letters)
    letters.add_argument("action", choices=["list", "show", "replay", "drop"])
    letters.add_argument("backend", nargs="?", help="the backend's name (list: all if omitted)")
    letters.add_argument("offset", nargs="?", type=int, help="the dead letter's stream offset")
    letters.add_argument("--all", action="store_true", help="replay: every dead letter")
    letters.add_argument("--format", choices=["table", "json"], default="table")
    letters.set_defaults(func=lambda args: _check_letters(args, run, letters_work))


def _check_letters(
    args: argparse.Namespace, run: Callable[[argparse.Namespace, Work], int], work: Work
) -> int:
    if args.action != "list" and not args.backend:
        print(f"helpline: dead-letters {args.action} needs the backend's name", file=sys.stderr)
        return 2
    return run(args, work)
