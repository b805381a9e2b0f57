"""Secrets never reach the logs: a field whose name says it holds one is redacted."""

from __future__ import annotations

import io
import json
import logging

import structlog

from gateway.logs import configure, redact


def test_secret_looking_fields_are_redacted_and_paths_kept() -> None:
    event = {
        "event": "imap.login",
        "password": "hunter2",
        "API_Token": "abc",
        "client_secret": "s3",
        "Authorization": "Bearer xyz",
        "token_file": "/var/lib/helpline/api-token",
        "credential_name": "imap-password",
        "user": "support@example.com",
    }
    out = redact(None, "info", dict(event))
    assert out["password"] == out["API_Token"] == out["client_secret"] == "[redacted]"
    assert out["Authorization"] == "[redacted]"
    assert out["token_file"] == event["token_file"]
    assert out["credential_name"] == event["credential_name"]
    assert out["user"] == event["user"]


def test_a_json_log_line_never_carries_the_secret(capsys: object) -> None:
    configure("json", "info")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        structlog.get_logger("test").info("oauth.refreshed", refresh_token="r-123", expires=3600)
        structlog.get_logger("test").info("oauth.refreshed", refresh_token="r-123", expires=3600)
    finally:
        root.removeHandler(handler)
        structlog.reset_defaults()  # as the other tests found it: no configure() before
    text = stream.getvalue() + str(capsys.readouterr().out)
    assert "r-123" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and all(line["refresh_token"] == "[redacted]" for line in lines)
