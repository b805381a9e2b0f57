"""Who the client is and how helpline is reached, behind a reverse proxy or not.

Forwarded headers are believed only from the configured `[http]
trusted_proxies`, walking X-Forwarded-For from the right past trusted hops,
so a client cannot choose the address it is logged (and later limited) as.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries]


class ProxyRules:
    def __init__(self, trusted: Iterable[str], public_url: str = "") -> None:
        self._trusted = parse_networks(trusted)
        self._public_url = public_url.rstrip("/")

    def _is_trusted(self, address: str | None) -> bool:
        if not address or not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def client(self, request: web.Request) -> str:
        """The client's address: the peer, or the nearest untrusted hop it forwarded for."""
        peer = request.remote or "unix"
        if not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops and hops[0] else peer

    def base_url(self, request: web.Request) -> str:
        """The URL clients use to reach helpline: [http] public_url, else what the request shows."""
        if self._public_url:
            return self._public_url
        scheme, host = request.scheme, request.host
        if self._is_trusted(request.remote):
            scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
            host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
        return f"{scheme}://{host}"
