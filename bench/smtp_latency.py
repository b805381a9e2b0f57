"""The `smtp` benchmark's latency phase: DATA end → 250 at a fixed offered rate.

smtp-source reports no latency, so this small asyncio client (no dependency
beyond the standard library; the SMTP exchange is written out on asyncio
streams) keeps `sessions` SMTP sessions open and offers messages at a fixed
rate: message k is due at start + k ÷ rate and goes out on whichever session is
free (open loop; a message that waited more than LATE_MS for a free session is
counted as late, so a server that cannot keep up shows in the JSON). Each
message is a new transaction on the open session (MAIL, RCPT, DATA, ~5 KB of
content with a distinct Message-ID, from one of SENDERS senders in turn,
the first message of each opening its conversation). The timer starts just before
the final ".\r\n" of the "\r\n.\r\n" that ends DATA is written and stops when
the reply line is read. Run as its own process (the harness pins it to the
load core) and prints one JSON line:

    python -m bench.smtp_latency --port PORT --rate R --seconds S [--sessions 20] [--warmup 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import orjson

from bench.procs import REPO_ROOT, BenchError, child_env, pinned

MARKER = "BENCH_RESULT "
LATE_MS = 5.0
RECIPIENT = "support@bench.example"
SENDERS = 100  # returning customers: message k comes from sender k % SENDERS
LINE = b"The quick brown fox jumps over the lazy dog, and the support desk answers soon.\r\n"
BODY = LINE * (5120 // len(LINE))


def message(k: int, tag: str) -> tuple[str, bytes]:
    sender = f"customer{k % SENDERS}.{tag}@client.example"
    head = (
        f"From: Customer {k % SENDERS} <{sender}>\r\n"
        f"To: <{RECIPIENT}>\r\n"
        f"Subject: order {k} has not arrived\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        f"Message-ID: <{tag}.{k}@client.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return sender, head.encode() + BODY


@dataclass
class Tally:
    measured_from: float
    latencies_ms: list[float] = field(default_factory=list)
    sent: int = 0
    late: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


async def reply(reader: asyncio.StreamReader) -> str:
    """One SMTP reply (all its lines); its text, with the code first."""
    lines: list[str] = []
    while True:
        raw = await reader.readline()
        if not raw:
            raise ConnectionError("the server closed the connection")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return "\n".join(lines)


async def expect(reader: asyncio.StreamReader, code: str) -> None:
    text = await reply(reader)
    if not text.startswith(code):
        raise RuntimeError(text.splitlines()[-1][:60])


async def session(
    port: int, jobs: asyncio.Queue[tuple[int, float]], tally: Tally, tag: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await expect(reader, "220")
        writer.write(b"EHLO latency.client.example\r\n")
        await expect(reader, "250")
        while True:
            k, due = await jobs.get()
            start = time.monotonic()
            if (start - due) * 1000 > LATE_MS:
                tally.late += 1
            sender, content = message(k, tag)
            writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
            await expect(reader, "250")
            writer.write(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
            await expect(reader, "250")
            writer.write(b"DATA\r\n")
            await expect(reader, "354")
            writer.write(content)
            await writer.drain()
            t0 = time.perf_counter()
            writer.write(b".\r\n")  # the content ends with \r\n: this completes \r\n.\r\n
            answer = await reply(reader)
            elapsed_ms = (time.perf_counter() - t0) * 1000
            tally.sent += 1
            if not answer.startswith("250"):
                key = answer.splitlines()[-1][:60]
                tally.refused[key] = tally.refused.get(key, 0) + 1
            elif start >= tally.measured_from:
                tally.latencies_ms.append(elapsed_ms)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(
    port: int, rate: float, seconds: float, *, sessions: int, warmup: float, tag: str
) -> dict[str, object]:
    jobs: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    start = time.monotonic() + 0.2  # after the sessions have said EHLO
    tally = Tally(measured_from=start + warmup)
    workers = [asyncio.create_task(session(port, jobs, tally, tag)) for _ in range(sessions)]
    total = int(rate * (warmup + seconds))
    for k in range(total):
        due = start + k / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.put_nowait((k, due))
        for w in workers:
            if w.done() and w.exception() is not None:
                raise BenchError(f"an SMTP session failed: {w.exception()!r}")
    deadline = time.monotonic() + 30
    while tally.sent + sum(tally.errors.values()) < total and time.monotonic() < deadline:
        if any(w.done() for w in workers):  # a session only ends by failing
            break
        await asyncio.sleep(0.01)
    ended = time.monotonic()
    for w in workers:
        w.cancel()
    outcomes = await asyncio.gather(*workers, return_exceptions=True)
    for out in outcomes:
        if isinstance(out, BaseException) and not isinstance(out, asyncio.CancelledError):
            name = type(out).__name__
            tally.errors[name] = tally.errors.get(name, 0) + 1
    lat = tally.latencies_ms
    return {
        "offered_rate": rate,
        "sessions": sessions,
        "warmup_seconds": warmup,
        "seconds": seconds,
        "offered": total,
        "answered": tally.sent,
        "achieved_rate": round(tally.sent / (ended - start), 1) if ended > start else 0.0,
        "measured": len(lat),
        "late": tally.late,
        "late_ms": LATE_MS,
        "refused": tally.refused,
        "errors": tally.errors,
        "latency_ms": {
            "p50": round(percentile(lat, 0.50), 3),
            "p90": round(percentile(lat, 0.90), 3),
            "p99": round(percentile(lat, 0.99), 3),
            "max": round(max(lat), 3) if lat else float("nan"),
            "mean": round(statistics.fmean(lat), 3) if lat else float("nan"),
        },
    }


def run_latency(
    port: int,
    *,
    rate: float,
    seconds: float,
    sessions: int,
    warmup: float,
    tag: str,
    core: int | None,
) -> dict[str, object]:
    """The client as its own process pinned to `core`; its JSON result."""
    cmd = pinned(
        [
            sys.executable,
            "-m",
            "bench.smtp_latency",
            "--port",
            str(port),
            "--rate",
            f"{rate:.1f}",
            "--seconds",
            str(seconds),
            "--sessions",
            str(sessions),
            "--warmup",
            str(warmup),
            "--tag",
            tag,
        ],
        core,
    )
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            timeout=warmup + seconds + 60,
            env=child_env(),
            cwd=REPO_ROOT,
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError("the SMTP latency client did not finish in time") from err
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            data = orjson.loads(line[len(MARKER) :])
            if isinstance(data, dict):
                data["command"] = cmd
                return data
    raise BenchError(
        f"the SMTP latency client failed (status {done.returncode}): "
        f"{(done.stdout + done.stderr)[-1500:]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--tag", default="lat")
    args = parser.parse_args()
    result = asyncio.run(
        drive(
            args.port,
            args.rate,
            args.seconds,
            sessions=args.sessions,
            warmup=args.warmup,
            tag=args.tag,
        )
    )
    print(MARKER + orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
