"""The imap connector's peers work: a private Dovecot and the local OAuth server.

These double as examples of the helpers the connector's tests use. One
Dovecot serves the whole module because stopping it costs a fixed second.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.dovecot import PrivateDovecot
from tests.oauth_fake import OAuthFake
from tests.peers import need

SUPPORT = "support@example.test"
ALICE = "alice@example.test"
MESSAGE = (
    b"From: Customer <cust@example.org>\r\n"
    b"To: support@example.test\r\n"
    b"Subject: printer on fire\r\n"
    b"Message-ID: <peer-test-1@example.org>\r\n"
    b"\r\n"
    b"It is still burning.\r\n"
)


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthFake]:
    with OAuthFake(SUPPORT) as fake:
        yield fake


@pytest.fixture(scope="module")
def dovecot(oauth: OAuthFake) -> Iterator[PrivateDovecot]:
    need("dovecot")
    users = {SUPPORT: "secret-support", ALICE: "secret-alice"}
    with PrivateDovecot(users, introspection_url=oauth.introspection_url) as server:
        yield server


def fetch_token(
    fake: OAuthFake, *, refresh_token: str | None = None, client_secret: str | None = None
) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token or fake.refresh_token,
        "client_id": fake.client_id,
        "client_secret": client_secret or fake.client_secret,
    }
    request = urllib.request.Request(
        fake.token_url, data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def xoauth2(server: PrivateDovecot, user: str, token: str) -> IMAPClient:
    imap = IMAPClient("127.0.0.1", server.port, ssl=False, timeout=10)
    try:
        imap.starttls(server.ssl_context())
        imap.oauth2_login(user, token)
    except BaseException:
        imap.shutdown()
        raise
    return imap


def test_password_login_over_starttls(dovecot: PrivateDovecot) -> None:
    with IMAPClient("127.0.0.1", dovecot.port, ssl=False, timeout=10) as imap:
        assert b"STARTTLS" in imap.capabilities()
        imap.starttls(dovecot.ssl_context())
        assert isinstance(imap.socket(), ssl.SSLSocket)
        imap.login(SUPPORT, "secret-support")
        for capability in (b"IDLE", b"UIDPLUS", b"CONDSTORE", b"MOVE"):
            assert imap.has_capability(capability)


def test_password_login_over_imaps(dovecot: PrivateDovecot) -> None:
    # Trusting the instance's cert file, with hostname checks on (the cert has IP:127.0.0.1).
    with dovecot.client(ALICE, "imaps") as imap:
        assert isinstance(imap.socket(), ssl.SSLSocket)
        assert imap.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"] > 0
    ctx = dovecot.ssl_context(verify=False)
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ctx) as imap:
        imap.login(ALICE, "secret-alice")


def test_wrong_password_is_refused(dovecot: PrivateDovecot) -> None:
    imap = IMAPClient("127.0.0.1", dovecot.port, ssl=False, timeout=10)
    with imap, pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        imap.login(SUPPORT, "not-the-password")


def test_append_returns_a_uid_that_uids_and_flags_see(dovecot: PrivateDovecot) -> None:
    dovecot.create_folder(SUPPORT, "Peers/Append")
    first = dovecot.append(SUPPORT, "Peers/Append", MESSAGE)
    second = dovecot.append(SUPPORT, "Peers/Append", MESSAGE, flags=[r"\Seen"])
    assert second > first > 0
    assert dovecot.uids(SUPPORT, "Peers/Append") == [first, second]
    assert dovecot.uids(SUPPORT, "Peers/Append", "UNSEEN") == [first]
    assert r"\Seen" in dovecot.flags(SUPPORT, "Peers/Append", second)
    assert r"\Seen" not in dovecot.flags(SUPPORT, "Peers/Append", first)


def test_uidvalidity_change_keeps_messages_and_drops_a_selected_session(
    dovecot: PrivateDovecot,
) -> None:
    dovecot.create_folder(SUPPORT, "Peers/Validity")
    uid = dovecot.append(SUPPORT, "Peers/Validity", MESSAGE)
    before = dovecot.uidvalidity(SUPPORT, "Peers/Validity")
    watcher = dovecot.client(SUPPORT)
    watcher.select_folder("Peers/Validity")

    after = dovecot.change_uidvalidity(SUPPORT, "Peers/Validity")

    assert after != before
    assert dovecot.uidvalidity(SUPPORT, "Peers/Validity") == after
    assert dovecot.uids(SUPPORT, "Peers/Validity") == [uid]
    # Dovecot closes a session that has the folder selected: the connector must reconnect.
    with pytest.raises((OSError, IMAPClient.AbortError)):
        watcher.noop()
    watcher.shutdown()


def test_xoauth2_with_a_token_from_the_token_endpoint(
    dovecot: PrivateDovecot, oauth: OAuthFake
) -> None:
    issued, introspections = oauth.issued, oauth.introspections
    status, answer = fetch_token(oauth)
    assert status == 200
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == oauth.expires_in
    assert oauth.issued == issued + 1

    with xoauth2(dovecot, SUPPORT, answer["access_token"]) as imap:
        assert imap.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"] > 0
    assert oauth.introspections == introspections + 1  # Dovecot really asked
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=dovecot.ssl_context()) as imap:
        imap.oauthbearer_login(SUPPORT, answer["access_token"])


def test_xoauth2_refuses_made_up_revoked_expired_and_foreign_tokens(
    dovecot: PrivateDovecot, oauth: OAuthFake
) -> None:
    revoked = fetch_token(oauth)[1]["access_token"]
    oauth.revoke_all()
    refused = {
        "made up": (SUPPORT, "not-a-token-anyone-issued"),
        "revoked": (SUPPORT, revoked),
        "expired": (SUPPORT, oauth.issue(expires_in=0)),
        "another user's": (ALICE, oauth.issue()),  # introspection names support@
    }

    def outcome(user: str, token: str) -> str:
        try:
            xoauth2(dovecot, user, token).logout()
        except LoginError as error:
            return str(error)
        return "logged in"

    # In parallel: Dovecot answers every failure on a 0.5 s tick.
    with ThreadPoolExecutor(len(refused)) as pool:
        outcomes = dict(
            zip(refused, pool.map(lambda case: outcome(*case), refused.values()), strict=True)
        )
    for why, result in outcomes.items():
        assert "AUTHENTICATIONFAILED" in result, f"{why} token: {result}"
    fresh = fetch_token(oauth)[1]["access_token"]  # revoking old tokens does not stop new ones
    xoauth2(dovecot, SUPPORT, fresh).logout()


def test_token_endpoint_refuses_a_wrong_client_or_refresh_token(oauth: OAuthFake) -> None:
    issued = oauth.issued
    assert fetch_token(oauth, refresh_token="stolen") == (400, {"error": "invalid_grant"})
    assert fetch_token(oauth, client_secret="guess") == (400, {"error": "invalid_client"})
    assert oauth.issued == issued
    first, second = fetch_token(oauth)[1], fetch_token(oauth)[1]
    assert first["access_token"] != second["access_token"]
    assert oauth.is_active(first["access_token"])
