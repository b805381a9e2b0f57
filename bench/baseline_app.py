"""The bare handler the product is judged against: same JSON parsing, no storage.

It runs as its own process (`python -m bench.baseline_app --port N`), pinned
like the daemon, and does what the daemon's POST /v1/messages must do at the
least: read the body, validate it with the same pydantic model
(gateway.web.bodies.MessageIn), and answer 201 with a small JSON. Whatever the
daemon spends beyond this is the price of dedup, identity, conversations and
the durable commit.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from aiohttp import web
from pydantic import ValidationError

from bench.procs import DAEMON_CORE, Child, pinned, spawn, wait_ready
from gateway.web.bodies import MessageIn

_counter = itertools.count(1)


async def post_message(request: web.Request) -> web.Response:
    try:
        body = MessageIn.model_validate_json(await request.read())
    except ValidationError as err:
        return web.Response(body=err.json().encode(), status=400, content_type="application/json")
    answer = {"offset": next(_counter), "duplicate": False, "subject": body.subject is not None}
    return web.Response(body=orjson.dumps(answer), status=201, content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ready"}', content_type="application/json")


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/messages", post_message)
    app.router.add_get("/readyz", readyz)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bare aiohttp baseline for the bench")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # Same server settings as the daemon's runner: no access log, keep-alive on.
    web.run_app(build_app(), host=args.host, port=args.port, access_log=None, print=None)


def start_baseline(work_dir: Path, port: int, core: int | None = DAEMON_CORE) -> Child:
    """Start this module as a process pinned like the daemon; return once it answers."""
    cmd = [sys.executable, "-m", "bench.baseline_app", "--port", str(port)]
    child = spawn("baseline handler", pinned(cmd, core), work_dir / "baseline.log")
    try:
        wait_ready(child, f"http://127.0.0.1:{port}/readyz")
    except BaseException:
        child.stop()
        raise
    return child


if __name__ == "__main__":
    main()
