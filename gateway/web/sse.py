"""The stream as server-sent events: each event's offset is its SSE id.

A client that reconnects with Last-Event-ID resumes exactly after the last
event it saw. Readers wake on commit (no polling); a comment line every
KEEPALIVE seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

from aiohttp import web

from gateway.events import with_offset
from gateway.web.context import WebContext

KEEPALIVE = 15.0
BATCH = 500


async def serve_sse(request: web.Request, ctx: WebContext, after: int) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 1000\n\n")
    while not ctx.shutting_down:
        rows = await ctx.reader.read(after, BATCH)
        if rows:
            chunk = b"".join(
                b"id: " + str(seq).encode() + b"\ndata: " + with_offset(seq, env) + b"\n\n"
                for seq, env in rows
            )
            await response.write(chunk)
            after = rows[-1][0]
            continue
        if not await ctx.reader.wait(after, KEEPALIVE) and not ctx.shutting_down:
            await response.write(b": keepalive\n\n")
    return response
