"""A Standard Webhooks consumer (reference/backends.md §8.1) for the webhook backend's tests.

It verifies each request the way the spec's reference library does (its own
HMAC code, not helpline's), records what arrived, and is scripted through the
harness's faults (3xx, 410, 429, 5xx, slow, reset).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.harness import FakeService

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def spec_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


@dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp: int
    event: dict[str, Any]
    body: bytes


class WebhookConsumer(FakeService):
    def __init__(self, secret: str = SECRET, *, jitter: float = 0.0, port: int = 0) -> None:
        super().__init__(port=port)
        self.secret = secret
        self.jitter = jitter  # up to this many seconds of random delay per request
        self.received: list[Received] = []
        self.bad_signatures = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hook", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        offered = request.headers.get("webhook-signature", "").split(" ")
        if spec_signature(self.secret, webhook_id, stamp, body) not in offered:
            with self.lock:
                self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        if self.jitter:
            await asyncio.sleep(random.uniform(0, self.jitter))
        with self.lock:
            self.received.append(Received(webhook_id, int(stamp), orjson.loads(body), body))
        return web.Response(status=204)

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.event for r in self.received]

    def ids(self) -> list[str]:
        with self.lock:
            return [r.webhook_id for r in self.received]
