"""STARTTLS with a configured certificate, and AUTH for a relay that must log in."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from tests.conftest import free_port
from tests.integration.test_smtp import inbound, mail, smtp_section


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return context


async def test_starttls_then_auth(
    make_daemon: Callable[..., Any], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    port = free_port()
    live = await make_daemon(
        smtp_section(
            port,
            extra=(
                f'tls_certificate = "{cert}"\ntls_key = "{key}"\nrequire_tls = true\n'
                'auth_users = { relay = "s3cret-relay" }\n'
            ),
        )
    )
    msg = mail("ann@example.org", "support@example.com", "Over TLS", "secured text body")

    def exchange() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example.org")
            seen["starttls"] = client.has_extn("starttls")
            seen["mail_before_tls"] = client.mail("ann@example.org")[0]
            client.rset()
            client.starttls(context=client_context())
            client.ehlo("client.example.org")
            seen["mail_before_auth"] = client.mail("ann@example.org")[0]
            client.rset()
            try:
                client.login("relay", "wrong")
            except smtplib.SMTPAuthenticationError as err:
                seen["bad_login"] = err.smtp_code
            client.login("relay", "s3cret-relay")
            seen["refused"] = client.sendmail(
                "ann@example.org", ["support@example.com"], msg.as_bytes()
            )
        return seen

    seen = await asyncio.to_thread(exchange)
    assert seen["starttls"] is True
    assert seen["mail_before_tls"] == 530  # must issue STARTTLS first
    assert seen["mail_before_auth"] == 530  # authentication required
    assert seen["bad_login"] == 535
    assert seen["refused"] == {}
    (event,) = await inbound(live, 1)
    assert event["data"]["subject"] == "Over TLS"


async def test_an_unreadable_certificate_fails_the_component_not_the_daemon(
    make_daemon: Callable[..., Any], tmp_path: Path
) -> None:
    port = free_port()
    live = await make_daemon(
        smtp_section(
            port,
            extra=(f'tls_certificate = "{tmp_path}/none.pem"\ntls_key = "{tmp_path}/none.key"\n'),
        )
    )
    status, body, _ = await live.get("/readyz", token=None)
    health = body["components"]["connectors.mail"]
    assert health["state"] == "failed" and "cannot load tls_certificate" in health["last_error"]
    assert status == 503  # a listener that cannot serve makes helpline unready


def test_tls_and_auth_settings_are_checked_together() -> None:
    for extra, fragment in (
        ('tls_certificate = "/x.pem"\n', "together"),
        ("require_tls = true\n", "require_tls needs"),
        ('auth_users = { relay = "pw" }\n', "auth_users with auth_require_tls"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(smtp_section(2525, extra=extra))
        assert fragment in str(info.value)
