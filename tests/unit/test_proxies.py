"""Forwarded headers are believed only from trusted proxies."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.config import ConfigError, parse_config
from gateway.web.proxies import ProxyRules


def request(peer: str, **headers: str) -> object:
    req = make_mocked_request("GET", "/v1/openapi.json", headers={"Host": "inside:8080", **headers})
    object.__setattr__(req, "_transport_peername", (peer, 4242))
    return req


def test_a_direct_client_cannot_pick_its_address() -> None:
    rules = ProxyRules(["10.0.0.0/8"])
    req = request("203.0.113.9", **{"X-Forwarded-For": "1.2.3.4"})
    assert rules.client(req) == "203.0.113.9"  # type: ignore[arg-type]


def test_trusted_hops_are_walked_from_the_right() -> None:
    rules = ProxyRules(["10.0.0.0/8", "192.0.2.1"])
    req = request("10.1.1.1", **{"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 192.0.2.1"})
    assert rules.client(req) == "198.51.100.7"  # type: ignore[arg-type]


def test_base_url_from_public_url_or_trusted_forwarded_headers() -> None:
    assert (
        ProxyRules([], "https://help.example.com/").base_url(request("127.0.0.1"))
        == "https://help.example.com"
    )  # type: ignore[arg-type]
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "help.example.com"}
    assert (
        ProxyRules(["127.0.0.1"]).base_url(request("127.0.0.1", **fwd))
        == "https://help.example.com"
    )  # type: ignore[arg-type]
    assert ProxyRules([]).base_url(request("127.0.0.1", **fwd)) == "http://inside:8080"  # type: ignore[arg-type]


def test_bad_proxy_entries_are_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[http]\ntrusted_proxies = ["10.0.0.0/8", "proxy.local"]\n')
    assert "http.trusted_proxies" in str(info.value)
    assert "'proxy.local' is not an IP address or CIDR range" in str(info.value)
