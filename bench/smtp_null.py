"""The `smtp` benchmark's protocol ceiling: aiosmtpd doing nothing with the message.

The same aiosmtpd SMTP class helpline's connector builds on, on a plain asyncio
loop (helpline runs on the default loop too), one fixed hostname (computed
once, as helpline does), and a handler whose DATA hook answers 250 at once: no
storage, no parsing. Run as its own process:

    python -m bench.smtp_null --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from bench.procs import Child, pinned, spawn
from bench.smtp_load import wait_banner

HOSTNAME = "null.helpline-bench.test"


class NothingHandler:
    """Counts the messages and answers 250: the least an aiosmtpd server can do."""

    def __init__(self) -> None:
        self.accepted = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted += 1
        return "250 OK"


async def serve(port: int) -> None:
    handler = NothingHandler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname=HOSTNAME, ident="bench-null"), host="127.0.0.1", port=port
    )
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    server.close()
    await server.wait_closed()
    print(f"accepted {handler.accepted}", flush=True)


def start_null(work_dir: Path, port: int, core: int | None) -> Child:
    """The nothing-server as its own process, pinned to `core`, once it greets with 220."""
    cmd = pinned([sys.executable, "-m", "bench.smtp_null", "--port", str(port)], core)
    child = spawn("aiosmtpd nothing-server", cmd, work_dir / "smtp_null.log")
    try:
        wait_banner(port, 20.0, "aiosmtpd nothing-server", child.alive)
    except BaseException:
        child.stop()
        raise
    return child


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
