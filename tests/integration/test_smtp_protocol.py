"""helpline's SMTP/LMTP sessions (connectors/mail/smtp_protocol.py) against stock aiosmtpd.

Both servers run side by side on loopback with a handler that records what it
is given; a client speaks to each over a real socket, byte for byte the same,
and the answers and the stored mail must be the same: DATA read in chunks must
behave as aiosmtpd's line-by-line reading (dot-unstuffing, the size and line
limits, bare LF, an end marker cut across reads, pipelined commands after it),
the address fast path as aiosmtpd's parser, and a session made from the
factory as one made by aiosmtpd's constructor.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import MethodType
from typing import Any

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.mail.smtp_protocol import FastLMTP, FastSMTP, session_factory

LIMIT = 3000  # data_size_limit of both servers
WIDTH = SMTP.line_length_limit  # 1001


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what DATA hands it and answers 250."""

    mails: list[tuple[str, list[str], bytes, Any]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                envelope.content,
            )
        )
        if isinstance(server, LMTP):
            return "\r\n".join(f"250 2.0.0 <{r}> OK" for r in envelope.rcpt_tos)
        return "250 OK"


@dataclass
class Server:
    recorder: Recorder
    port: int
    server: asyncio.AbstractServer


async def _serve(make: Any, recorder: Recorder) -> Server:
    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    return Server(recorder, server.sockets[0].getsockname()[1], server)


@pytest.fixture
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Server, Server]]:
    """(stock aiosmtpd, helpline's session) with the same options."""
    lmtp = getattr(request, "param", False)
    stock_cls, fast_cls = (LMTP, FastLMTP) if lmtp else (SMTP, FastSMTP)
    options: dict[str, Any] = {"data_size_limit": LIMIT, "hostname": "mx.test"}
    a, b = Recorder(), Recorder()
    stock = await _serve(lambda: stock_cls(a, **options), a)
    fast = await _serve(session_factory(fast_cls, b, **options), b)
    yield stock, fast
    for s in (stock, fast):
        s.server.close()
        await s.server.wait_closed()


async def _reply(reader: asyncio.StreamReader) -> str:
    lines = []
    while True:
        line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1").rstrip("\r\n")
        lines.append(line)
        if line[3:4] != "-":
            return "\n".join(lines)


async def talk(
    port: int,
    commands: Sequence[bytes | Sequence[bytes]],
    *,
    replies_per_command: Sequence[int] | None = None,
) -> list[str]:
    """Send each command (a list of pieces is written piece by piece, with a pause between,
    so the server reads it in several chunks) and collect the replies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        out = [await _reply(reader)]
        for n, command in enumerate(commands):
            pieces = [command] if isinstance(command, bytes) else list(command)
            for i, piece in enumerate(pieces):
                writer.write(piece)
                await writer.drain()
                if i < len(pieces) - 1:
                    await asyncio.sleep(0.005)
            for _ in range(replies_per_command[n] if replies_per_command else 1):
                out.append(await _reply(reader))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


def envelope(data: Sequence[bytes] | bytes, helo: bytes = b"EHLO client.test\r\n") -> list[Any]:
    """A session: greeting, sender, recipient, DATA with this content (end marker included
    by the caller), then NOOP (is the session still in step?) and QUIT."""
    return [
        helo,
        b"MAIL FROM:<ann@example.org>\r\n",
        b"RCPT TO:<support@example.com>\r\n",
        b"DATA\r\n",
        data,
        b"NOOP\r\n",
        b"QUIT\r\n",
    ]


async def both(pair: tuple[Server, Server], commands: list[Any], **kw: Any) -> list[str]:
    stock, fast = pair
    want = await talk(stock.port, commands, **kw)
    got = await talk(fast.port, commands, **kw)
    assert got == want
    assert [m[:3] for m in fast.recorder.mails] == [m[:3] for m in stock.recorder.mails]
    assert [m[3] for m in fast.recorder.mails] == [m[3] for m in stock.recorder.mails]
    return got


def lines(*items: bytes) -> bytes:
    return b"".join(items)


def body(size: int, line: int = 78) -> bytes:
    """`size` bytes of CRLF-terminated lines of at most `line` bytes (with the CRLF)."""
    out, n = [], 0
    while n < size:
        take = min(line, size - n)
        out.append(b"x" * (take - 2) + b"\r\n" if take >= 2 else b"\r\n"[:take])
        n += take
    data = b"".join(out)
    assert len(data) == size and (not size or data.endswith(b"\n"))
    return data


CASES: dict[str, Any] = {
    "plain": lines(b"Subject: hi\r\n\r\n", body(2000)) + b".\r\n",
    "empty": b".\r\n",
    "dot-stuffed": lines(
        b"..a line that began with a dot\r\n",
        b"middle\r\n",
        b"..\r\n",  # a line that was a lone dot
        b"...\r\n",
        b". not the end\r\n",
        b"..\r\n",
    )
    + b".\r\n",
    "dot not at a line start": b"a.b\r\n x.\r\n\r\n.x\r\n.\r\n",
    "exactly at the size limit": body(LIMIT) + b".\r\n",
    "one byte over the size limit": body(LIMIT + 1) + b".\r\n",
    "far over the size limit": body(LIMIT * 40) + b".\r\n",
    "at the limit, dot-stuffed": b".." + body(LIMIT - 2)[1:] + b".\r\n",
    "bare LF": b"From: a@b\nSubject: s\n\nline\n.\nstill the mail\r\n.\r\n",
    "bare LF, long": b"x\n" * 600 + b"\r\n.\r\n",
    "bare CR": b"a\rb\r\r\n.\r\n",
    "CR before the line end": b"abc\r\r\n.\r\n",
    "line of 999+CRLF": b"y" * (WIDTH - 2) + b"\r\n.\r\n",
    "line of 1000+CRLF": b"y" * (WIDTH - 1) + b"\r\n.\r\n",
    "line of 1001+CRLF": b"y" * WIDTH + b"\r\n.\r\n",
    "line of 1002+CRLF": b"y" * (WIDTH + 1) + b"\r\n.\r\n",
    "line of 5000": b"z" * 5000 + b"\r\nmore\r\n.\r\n",
    "long line, then over the size": b"z" * 1200 + b"\r\n" + body(LIMIT * 2) + b".\r\n",
    "over the size, then a long line": body(LIMIT + 10) + b"z" * 1200 + b"\r\n.\r\n",
    "1002 long line crossing the size": body(LIMIT - 500) + b"q" * 1000 + b"\r\n.\r\n",
    "8-bit and NUL": b"Subject: \xff\xfe\x00\r\n\r\n\xc3\xa4\x00\r\n.\r\n",
    "pipelined after the end": b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\n",
}


@pytest.mark.parametrize("name", list(CASES))
async def test_data_as_stock_aiosmtpd_reads_it(pair: tuple[Server, Server], name: str) -> None:
    data = CASES[name]
    extra = [1] * 7
    if name == "pipelined after the end":
        extra[4] = 2  # the DATA answer and the NOOP's
    await both(pair, envelope(data), replies_per_command=extra)


@pytest.mark.parametrize(
    "split",
    [
        [b"Subject: s\r\n\r\nbody\r\n", b".\r\n"],
        [b"Subject: s\r\n\r\nbody\r", b"\n.\r\n"],
        [b"Subject: s\r\n\r\nbody\r\n.", b"\r\n"],
        [b"Subject: s\r\n\r\nbody\r\n.\r", b"\n"],
        [b".", b".x\r\n.\r\n"],
        [b".", b"\r\n"],
        [b"a\r\n", b"..b\r\n", b".", b".\r\n", b".\r\n"],
        [b"y" * 700, b"y" * 400, b"\r\n.\r\n"],  # a long line arriving in pieces
        [body(LIMIT - 100), body(200), b".\r\n"],
        [body(LIMIT), b".\r\n"],
        [body(LIMIT + 2000), body(5000), b"\r\n.", b"\r\n"],
    ],
)
async def test_data_cut_across_reads(pair: tuple[Server, Server], split: list[bytes]) -> None:
    await both(pair, envelope(split))


async def test_two_mails_in_one_session(pair: tuple[Server, Server]) -> None:
    commands = [
        *envelope(b"first\r\n.\r\n")[:-1],
        b"MAIL FROM:<bob@example.org>\r\n",
        b"RCPT TO:<sales@example.com>\r\n",
        b"DATA\r\n",
        [b"..second\r\n", b".\r\n"],
        b"QUIT\r\n",
    ]
    await both(pair, commands)
    assert [m[2] for m in pair[1].recorder.mails] == [b"first\r\n", b".second\r\n"]


@pytest.mark.parametrize("pair", [True], indirect=True)
async def test_lmtp_answers_per_recipient_as_stock(pair: tuple[Server, Server]) -> None:
    commands = [
        b"LHLO client.test\r\n",
        b"MAIL FROM:<ann@example.org>\r\n",
        b"RCPT TO:<support@example.com>\r\n",
        b'RCPT TO:<"quoted"@example.com>\r\n',
        b"DATA\r\n",
        [b"Subject: two\r\n\r\n..x\r\n", b".\r\n"],
        b"DATA\r\n",  # no recipients after a mail: 503
        b"QUIT\r\n",
    ]
    got = await both(pair, commands, replies_per_command=[1, 1, 1, 1, 1, 2, 1, 1])
    assert got[6:8] == ["250 2.0.0 <support@example.com> OK", "250 2.0.0 <quoted@example.com> OK"]


PROTOCOL_ERRORS = [
    [b"DATA\r\n", b"QUIT\r\n"],  # before HELO
    [b"EHLO c\r\n", b"DATA\r\n", b"QUIT\r\n"],  # no recipient
    [b"EHLO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<d@e.f>\r\n", b"DATA x\r\n", b"QUIT\r\n"],
    [b"EHLO c\r\n", b"MAIL FROM:<a@b.c> SIZE=999999\r\n", b"QUIT\r\n"],
    [b"EHLO c\r\n", b"MAIL FROM:<a@b.c> SIZE=10 BODY=8BITMIME\r\n", b"HELP DATA\r\n", b"QUIT\r\n"],
]


@pytest.mark.parametrize("commands", PROTOCOL_ERRORS)
async def test_protocol_answers_as_stock(
    pair: tuple[Server, Server], commands: list[bytes]
) -> None:
    await both(pair, commands)


# -- addresses -------------------------------------------------------------------------

ODD_BUT_VALID = [
    "<ann@example.org>",
    "<ann@example.org> SIZE=100",
    "<ann@example.org>   BODY=8BITMIME  SIZE=5",
    "<ann@example.org>\tSIZE=100",
    '<"ann lee"@example.org>',
    '<"ann"@example.org>',
    "<ann@example.org> (a comment) SIZE=5",
    "<ann@example.org>(comment)",
    "<@relay.example:ann@example.org>",
    "ann@example.org",
    "ann@example.org SIZE=5",
    "<>",
    "< ann@example.org >",
    "<ann.@example.org>",
    "<ann..lee@example.org>",
    "<ann@[192.0.2.1]>",
    "<=?utf-8?q?x?=@example.org>",
    "<ann@example.org>SIZE=5",
    "<ann@example.org",
    "<ann@>",
    "<@example.org>",
    "<ann>",
    "<a!#$%&'*+/=?^_`{|}~-b@ex-ample.org>",
    "<ann@example.org> \x0bSIZE=5",
    "",
]


async def test_addresses_odd_but_valid_as_stock() -> None:
    stock, fast = SMTP(Recorder()), session_factory(FastSMTP, Recorder())()
    for arg in ODD_BUT_VALID:
        assert fast._getaddr(arg) == stock._getaddr(arg), arg


_ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"
_ATOM = st.text(_ATEXT, min_size=1, max_size=6)
_DOT_ATOM = st.lists(_ATOM, min_size=1, max_size=3).map(".".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _DOT_ATOM,
    _DOT_ATOM,
    st.sampled_from(["", " ", "\t", "  ", " (", "(", "x", ">", " \x0b", "\x0b"]),
    st.text("SIZE=0123 BODY8ITMEa()\t", max_size=12),
)
def test_addresses_plain_as_stock(local: str, domain: str, gap: str, rest: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        stock = SMTP(Recorder(), loop=loop)
        fast = session_factory(FastSMTP, Recorder(), loop=loop)()
        for arg in (f"<{local}@{domain}>{gap}{rest}", f"<{local}@{domain}>"):
            assert fast._getaddr(arg) == stock._getaddr(arg), arg
    finally:
        loop.close()


# -- DATA, generated ---------------------------------------------------------------------

_LINE = st.one_of(
    st.sampled_from([b"", b".", b"..", b"...", b".x", b"x.", b"a\nb", b"\n.", b"\r", b"c\r"]),
    st.integers(0, WIDTH + 4).map(lambda n: b"w" * n),
    st.binary(max_size=40).filter(lambda b: b"\r\n" not in b),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINE, max_size=12), st.integers(0, 3), st.lists(st.floats(0, 1), max_size=3))
def test_generated_data_as_stock(content: list[bytes], padding: int, cuts: list[float]) -> None:
    # As a client sends it: dot-stuffed, so no line is the end marker before the end.
    stuffed = (b"." + line if line.startswith(b".") else line for line in content)
    data = b"".join(line + b"\r\n" for line in stuffed) + body(padding * 900) + b".\r\n"
    at = sorted({int(c * len(data)) for c in cuts} - {0, len(data)})
    pieces = [data[i:j] for i, j in zip([0, *at], [*at, len(data)], strict=True)]

    async def run() -> None:
        a, b = Recorder(), Recorder()
        options: dict[str, Any] = {"data_size_limit": LIMIT, "hostname": "mx.test"}
        stock = await _serve(lambda: SMTP(a, **options), a)
        fast = await _serve(session_factory(FastSMTP, b, **options), b)
        try:
            await both((stock, fast), envelope(pieces))
        finally:
            for s in (stock, fast):
                s.server.close()
                await s.server.wait_closed()

    asyncio.run(run())


# -- the session factory --------------------------------------------------------------


async def test_a_factory_session_is_a_stock_session() -> None:
    """The same attributes as aiosmtpd's constructor makes, nothing mutable shared between
    sessions but the handler's hooks, methods bound to the session itself."""
    loop = asyncio.get_running_loop()
    handler = Recorder()
    options: dict[str, Any] = {"data_size_limit": LIMIT, "hostname": "mx.test", "loop": loop}
    for cls in (FastSMTP, FastLMTP):
        stock = cls(handler, **options)
        make = session_factory(cls, handler, **options)
        one, two = make(), make()
        assert type(one) is cls
        assert set(vars(one)) == set(vars(stock)) | {"command_size_limits"}
        per_session = {"_stream_reader_wr", "_strong_reader", "_closed", "_drain_waiters"}
        for name, want in vars(stock).items():
            got, other = getattr(one, name), getattr(two, name)
            if name in ("_smtp_methods", "_auth_methods"):
                assert got.keys() == want.keys()
                for value in got.values():
                    method = value if name == "_smtp_methods" else value.method
                    assert isinstance(method, MethodType)
                    assert method.__self__ is one
                    assert method.__func__ is getattr(cls, method.__name__)
                assert got is not other
            elif isinstance(want, MethodType) and want.__self__ is stock:
                assert isinstance(got, MethodType) and got.__self__ is one, name
                assert got.__func__ is want.__func__, name
            elif name in per_session:
                assert type(got) is type(want) and got is not other, name
            elif name == "_handle_hooks":
                assert got == want
            else:
                assert got == want, name
                if isinstance(got, list | dict | set | bytearray | collections.deque):
                    assert got is not other, name
        assert one.command_size_limits is not two.command_size_limits
        assert one.command_size_limits["MAIL"] == SMTP.command_size_limit
