"""The `imap` benchmark's client processes: the paced appender and the bare IDLE watcher.

    python -m bench.imap_client append --port P --folder F --count N --out FILE
        [--warmup W] [--interval 0.2] [--tag T] [--stream URL] [--drain 15]
    python -m bench.imap_client watch --port P --folder F --expect N --out FILE [--deadline S]

Both log in as bench/imap_dovecot.py's user with the password from the
environment (HELPLINE_BENCH_IMAP_PASSWORD; the API token for --stream in
HELPLINE_BENCH_TOKEN), so neither shows in `ps`. Every time is
`time.monotonic()`, one clock for every process of the machine (Linux
CLOCK_MONOTONIC), so the harness subtracts times taken in different processes.

`append` APPENDs one message at a time (IMAPClient, UIDPLUS): W warm-up
messages, then N measured ones, message k due at start + k * interval (an open
loop: a slow APPEND does not push the later ones back, and one started more
than LATE_MS after its slot is counted). Each has its own Message-ID and one
of SENDERS senders in turn. The time taken is when the tagged OK of the APPEND
was read. With --stream (the product run) a thread follows helpline's
`GET /v1/stream` as server-sent events from before the first APPEND and
records when each helpline.message.inbound.v1 carrying one of our Message-IDs
was read; each warm-up message is waited for (so the connector is in IDLE
before the measured ones), and after the last APPEND it waits up to --drain
seconds for the rest.

`watch` (the baseline) is a bare IMAPClient on the folder: SELECT, IDLE, and
the time each `* n EXISTS` push is read (`idle_check`, as the connector
itself waits); message n of the fresh folder is the n-th APPEND. It prints
READY once its IDLE is accepted and ends when it has seen `expect` messages
or after --deadline seconds.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import orjson
from imapclient import IMAPClient

HOST = "127.0.0.1"
USER = "support@bench.example"
PASSWORD_ENV = "HELPLINE_BENCH_IMAP_PASSWORD"
TOKEN_ENV = "HELPLINE_BENCH_TOKEN"
READY = "READY"
INBOUND = "helpline.message.inbound.v1"
LATE_MS = 50.0
SENDERS = 20  # returning customers: message k comes from sender k % SENDERS
LINE = "Hello, my order has not arrived yet and the tracking page shows no update since Monday.\r\n"
BODY = LINE * 24  # about 2 KB of text


def message(tag: str, k: int) -> tuple[str, bytes]:
    """(Message-ID without brackets, the raw mail) of message k of run `tag`."""
    message_id = f"{tag}.{k}@client.example"
    n = k % SENDERS
    head = (
        f"From: Customer {n} <customer{n}.{tag}@client.example>\r\n"
        f"To: Support <{USER}>\r\n"
        f"Subject: order {k} has not arrived\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return message_id, (head + f"Message {k} of {tag}.\r\n" + BODY).encode()


def login(port: int, timeout: float = 30.0) -> IMAPClient:
    imap = IMAPClient(HOST, port, ssl=False, timeout=timeout)
    imap.login(USER, os.environ[PASSWORD_ENV])
    return imap


class StreamFollower(threading.Thread):
    """Reads helpline's SSE stream; the first time each inbound Message-ID was read."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(name="stream", daemon=True)
        parts = urllib.parse.urlsplit(url)
        self._host, self._port = parts.hostname or HOST, parts.port or 80
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        self._token = token
        self.connected = threading.Event()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.seen: dict[str, list[float]] = {}  # Message-ID -> every time it was read
        self.events = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._follow()
        except Exception as err:  # reported in the result: the run is then invalid
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self.connected.set()
            with self.changed:
                self.changed.notify_all()

    def _follow(self) -> None:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
        conn.request(
            "GET",
            self._path,
            headers={"Accept": "text/event-stream", "Authorization": f"Bearer {self._token}"},
        )
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"GET {self._path} answered {resp.status}: {resp.read(300)!r}")
        self.connected.set()
        while True:
            line = resp.readline()
            now = time.monotonic()
            if not line:
                raise RuntimeError("the stream ended")
            if not line.startswith(b"data: "):
                continue
            envelope = orjson.loads(line[6:])
            data = envelope.get("data") if isinstance(envelope, dict) else None
            with self.changed:
                self.events += 1
                if envelope.get("type") == INBOUND and isinstance(data, dict):
                    message_id = data.get("message_id")
                    if isinstance(message_id, str):
                        self.seen.setdefault(message_id, []).append(now)
                        self.changed.notify_all()

    def wait_for(self, message_ids: set[str], until: float) -> bool:
        """Until every one of `message_ids` was read (True) or time runs out (False)."""
        with self.changed:
            while not message_ids <= self.seen.keys():
                left = until - time.monotonic()
                if left <= 0 or self.error is not None:
                    return False
                self.changed.wait(left)
            return True


def _uid(answer: bytes) -> int | None:
    found = re.search(rb"\[APPENDUID \d+ (\d+)\]", answer)
    return int(found.group(1)) if found else None


def append(args: argparse.Namespace) -> dict[str, object]:
    follower: StreamFollower | None = None
    if args.stream:
        follower = StreamFollower(args.stream, os.environ[TOKEN_ENV])
        follower.start()
        if not follower.connected.wait(30) or follower.error:
            raise RuntimeError(f"could not follow the stream: {follower.error}")
    imap = login(args.port)
    rows: list[dict[str, object]] = []
    missing: list[str] = []

    def one(k: int, warmup: bool, due: float) -> str:
        message_id, raw = message(args.tag, k)
        start = time.monotonic()
        answer = imap.append(args.folder, raw)
        done = time.monotonic()
        rows.append(
            {
                "k": k,
                "message_id": message_id,
                "warmup": warmup,
                "uid": _uid(answer if isinstance(answer, bytes) else str(answer).encode()),
                "due": due,
                "start": start,
                "done": done,
                "late": (start - due) * 1000 > LATE_MS,
            }
        )
        return message_id

    try:
        for k in range(args.warmup):
            due = time.monotonic()
            message_id = one(k, True, due)
            # The first one may wait for the connector to reach IDLE; then they're quick.
            if follower is not None and not follower.wait_for(
                {message_id}, due + (30 if k == 0 else 10)
            ):
                missing.append(message_id)
                break
            time.sleep(args.interval)
        measured: set[str] = set()
        if not missing:
            start = time.monotonic()
            for i in range(args.count):
                due = start + i * args.interval
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                measured.add(one(args.warmup + i, False, due))
        if follower is not None and measured:
            follower.wait_for(measured, time.monotonic() + args.drain)
    finally:
        try:
            imap.logout()
        except Exception:  # the socket may be gone; nothing to keep
            imap.shutdown()
    result: dict[str, object] = {"appends": rows, "missing_warmup": missing}
    if follower is not None:
        with follower.lock:
            result["stream"] = {k: list(v) for k, v in follower.seen.items()}
            result["stream_events"] = follower.events
            result["stream_error"] = follower.error
    return result


def watch(args: argparse.Namespace) -> dict[str, object]:
    imap = login(args.port)
    info: dict[bytes, Any] = imap.select_folder(args.folder)
    start_count = int(info.get(b"EXISTS", 0))
    seen: dict[int, float] = {}  # message number -> when its EXISTS was read
    responses = 0
    highest = start_count
    imap.idle()
    print(READY, flush=True)
    until = time.monotonic() + args.deadline
    try:
        while highest < args.expect and time.monotonic() < until:
            got = imap.idle_check(timeout=0.5)
            now = time.monotonic()
            for item in got:
                responses += 1
                if isinstance(item, tuple) and len(item) >= 2 and item[1] == b"EXISTS":
                    count = int(item[0])
                    for n in range(highest + 1, count + 1):
                        seen[n] = now
                    highest = max(highest, count)
        imap.idle_done()
    finally:
        try:
            imap.logout()
        except Exception:  # the socket may be gone; nothing to keep
            imap.shutdown()
    return {"start_count": start_count, "exists": seen, "responses": responses}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("append")
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--warmup", type=int, default=3)
    a.add_argument("--interval", type=float, default=0.2)
    a.add_argument("--tag", default="imap")
    a.add_argument("--stream", default="")
    a.add_argument("--drain", type=float, default=15.0)
    w = sub.add_parser("watch")
    w.add_argument("--expect", type=int, required=True)
    w.add_argument("--deadline", type=float, default=60.0)
    for p in (a, w):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--folder", required=True)
        p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = append(args) if args.mode == "append" else watch(args)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
