"""A private Request Tracker 5 (Debian's request-tracker5) for the rt backend's tests.

Recipe from ../shared/PEERS.md section 2: RT reads only our own RT_SiteConfig.pm
and an empty RT_SiteConfig.d in a temp dir directly under /tmp (mode 0755), keeps
its SQLite database, logs, Mason cache and outgoing mail there, and is served by
rt-server (Starlet) on a free loopback port with two workers. /etc/request-tracker5
is never read. One RT costs about 3 s to set up, so share one per session or module.

The helpers that act for people other than helpline (an agent replying in RT,
reading a ticket's history) are synchronous stdlib HTTP calls of about 0.4 s each;
from an async test that must not block its loop, wrap them in `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.peers import PeerProcess

HOST = "127.0.0.1"
RT_HOME = Path("/usr/share/request-tracker5")
RT_SERVER = RT_HOME / "libexec" / "rt-server"
RT_SETUP = Path(shutil.which("rt-setup-database-5") or "/usr/sbin/rt-setup-database-5")
PACKAGES = "request-tracker5 rt5-db-sqlite rt5-standalone"

QUEUE = "Helpline"
CONVERSATION_CF = "Helpline-Conversation"
EVENT_CF = "Helpline-Event"
ROOT_PASSWORD = "password"  # RT's built-in default for root after `--action init`
AGENT = "agent1"
AGENT_PASSWORD = "agent1-secret"
AGENT_EMAIL = "agent1@helpline-ci.test"

# The queue rights an agent needs to work a Helpline ticket in RT's web UI or REST2.
AGENT_RIGHTS = (
    "SeeQueue",
    "ShowTicket",
    "ShowTicketComments",
    "CreateTicket",
    "ReplyToTicket",
    "CommentOnTicket",
    "ModifyTicket",
    "OwnTicket",
    "SeeCustomField",
    "ModifyCustomField",
)

# RT's notification templates that mail a ticket's requestors (AutoReply on create,
# correspondence, resolve). A queue template with the same name as a global one
# wins for that queue, and an empty template makes the scrip send nothing:
# "Template is empty" (RT::Template::_ParseContent), so RT::Action::SendEmail skips.
REQUESTOR_TEMPLATES = ("Correspondence in HTML", "AutoReply in HTML", "Resolved in HTML")

Attachment = tuple[str, str, bytes]  # (file name, MIME type, content)


class RTNotInstalledError(RuntimeError):
    """RT's Debian packages are missing (tests/run installs them when run as root)."""


def rt_installed() -> bool:
    return RT_SERVER.exists() and RT_SETUP.exists()


def need_rt() -> None:
    """Skip, like tests.peers.need, when RT is not installed on this machine."""
    if not rt_installed():
        pytest.skip(f"Request Tracker 5 is not installed: {PACKAGES} (tests/run installs them)")


def silence_requestors_initialdata(queue: str) -> str:
    """The initialdata (Perl) that stops RT mailing `queue`'s requestors itself.

    Empty queue-level copies of the global notification templates: the global
    scrips stay as they are for every other queue, and RT's mail to AdminCcs and
    owners (other templates) still goes out. This is what operators apply with
    `rt-setup-database-5 --action insert --datafile FILE` (works while RT runs).
    """
    items = ",\n".join(
        f"    {{ Queue => {_perl(queue)}, Name => {_perl(name)}, Type => 'Simple',\n"
        f"      Description => 'helpline: no mail to requestors', Content => '' }}"
        for name in REQUESTOR_TEMPLATES
    )
    return f"@Templates = (\n{items}\n);\n1;\n"


def _perl(value: str) -> str:
    """A single-quoted Perl string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RTError(AssertionError):
    """An RT answer the helper did not expect; carries status and body for the test log."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"RT {method} {path}: {status} {body[:500]}")
        self.status = status
        self.body = body


class PrivateRT(PeerProcess):
    """RT 5 on a free loopback port, with queue `Helpline`, helpline's custom fields and an agent.

    - `Helpline-Conversation`: ticket CF (FreeformSingle) applied to the Helpline queue;
    - `Helpline-Event`: transaction CF (FreeformSingle, LookupType
      RT::Queue-RT::Ticket-RT::Transaction) applied to the Helpline queue, so
      `TxnCustomFields` on correspond/comment there is stored and searchable;
    - `agent1` (privileged, password AGENT_PASSWORD) with AGENT_RIGHTS on the queue,
      so the helpers below can reply as somebody who is not the API user;
    - `root` (SuperUser, password `password`) with an auth token in `token`: the
      user helpline's backend talks as.
    RT's own mail goes through DIR/sendmail into files in `outmail`.
    """

    stop_timeout = 15.0  # the Starlet master stops its workers (about 2.4 s)
    kill_group = True  # its own session: only rt-server and its workers

    def __init__(self) -> None:
        if not rt_installed():
            raise RTNotInstalledError(
                f"Request Tracker 5 is not installed (no {RT_SERVER}): "
                f"apt-get install {PACKAGES} (tests/run does this as root)"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="hl-rt-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.outmail = self.dir / "outmail"
        self.log_path = self.dir / "log" / "rt.log"
        self.stderr_path = self.dir / "stderr.log"
        self.port = 0
        self.url = ""
        self.rest = ""
        self.token = ""
        self.root_password = ROOT_PASSWORD
        self.agent = AGENT
        self.agent_password = AGENT_PASSWORD
        self.agent_email = AGENT_EMAIL
        self.queue = QUEUE
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        for sub in ("RT_SiteConfig.d", "log", "mason", "sessions", "outmail"):
            (self.dir / sub).mkdir()
        sendmail = self.dir / "sendmail"
        # RT pipes each message to "$SendmailPath $SendmailArguments"; keep one file per mail.
        sendmail.write_text(
            f'#!/bin/sh\nexec cat > "{self.outmail}/$(date +%s%N)-$$.eml"\n', encoding="utf-8"
        )
        sendmail.chmod(0o755)

    # -- setup -----------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RT_SITE_CONFIG": str(self.dir / "RT_SiteConfig.pm"),
            "RT_SITE_CONFIG_DIR": str(self.dir / "RT_SiteConfig.d"),
        }

    def _write_config(self) -> None:
        d = self.dir
        settings = [
            f"Set($rtname, {_perl('helpline-ci')});",
            f"Set($Organization, {_perl('helpline-ci.test')});",
            "Set($Timezone, 'UTC');",
            f"Set($WebDomain, {_perl(HOST)});",
            f"Set($WebPort, {self.port});",
            "Set($WebPath, '');",
            f"Set($WebBaseURL, {_perl(self.url)});",
            "Set($CorrespondAddress, 'support@helpline-ci.test');",
            "Set($CommentAddress, 'support-comment@helpline-ci.test');",
            "Set($DatabaseType, 'SQLite');",
            f"Set($DatabaseName, {_perl(str(d / 'rt.sqlite'))});",
            "Set($LogToSyslog, undef);",
            "Set($LogToSTDERR, 'warning');",
            "Set($LogToFile, 'info');",
            f"Set($LogDir, {_perl(str(d / 'log'))});",
            "Set($LogToFileNamed, 'rt.log');",
            "Set($MailCommand, 'sendmailpipe');",
            f"Set($SendmailPath, {_perl(str(d / 'sendmail'))});",
            "Set($DisableGraphViz, 1);",
            "Set($DisableGD, 1);",
            # Plain Perl assignments, not Set(): keep Mason's cache and sessions private.
            f"$RT::MasonDataDir = {_perl(str(d / 'mason'))};",
            f"$RT::MasonSessionDir = {_perl(str(d / 'sessions'))};",
            "1;",
        ]
        (d / "RT_SiteConfig.pm").write_text("\n".join(settings) + "\n", encoding="utf-8")

    def _initialdata(self) -> str:
        """Queue, CFs, agent and rights; @Final also writes root's auth token to DIR/token.

        Making the token here saves a second Perl start of RT (≈1.2 s).
        """
        acl = "".join(
            f"    {{ UserId => '{AGENT}', Queue => '{QUEUE}', Right => '{right}' }},\n"
            for right in AGENT_RIGHTS
        )
        token_file = _perl(str(self.dir / "token"))
        return f"""
@Queues = ({{ Name => '{QUEUE}', Description => 'helpline conversations',
             CorrespondAddress => 'support@helpline-ci.test',
             CommentAddress => 'support-comment@helpline-ci.test' }});
@Users = ({{ Name => '{AGENT}', Password => {_perl(AGENT_PASSWORD)},
            EmailAddress => '{AGENT_EMAIL}', RealName => 'Agent One', Privileged => 1 }});
@CustomFields = (
    {{ Name => '{CONVERSATION_CF}', Type => 'FreeformSingle',
      LookupType => 'RT::Queue-RT::Ticket', ApplyTo => '{QUEUE}',
      Description => 'helpline conversation id' }},
    {{ Name => '{EVENT_CF}', Type => 'FreeformSingle',
      LookupType => 'RT::Queue-RT::Ticket-RT::Transaction', ApplyTo => '{QUEUE}',
      Description => 'helpline event id' }},
);
@ACL = (
{acl});
@Final = (sub {{
    my $u = RT::User->new(RT->SystemUser);
    $u->Load('root') or die "no root";
    my ($id, $msg, $auth) = RT::AuthToken->new(RT::CurrentUser->new($u))
        ->Create(Owner => $u->Id, Description => 'helpline-tests');
    die "token: $msg" unless $id;
    open(my $fh, '>', {token_file}) or die "token file: $!";
    print $fh $auth;
    close($fh);
}});
1;
"""

    def setup_database(self, datafile: str | None = None) -> None:
        """Without datafile: a fresh schema with RT's core data (≈1.5 s). With one: insert it."""
        if datafile is None:
            args = ["--action", "init", "--skip-create"]
        else:
            path = self.dir / f"data-{time.monotonic_ns()}.pl"
            path.write_text(datafile, encoding="utf-8")
            args = ["--action", "insert", "--datafile", str(path)]
        done = subprocess.run(
            [str(RT_SETUP), *args],
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        # rt-setup-database logs errors of single items and still exits 0: check the text.
        if done.returncode != 0 or "[error]" in done.stdout + done.stderr:
            raise AssertionError(
                f"rt-setup-database {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}"
            )

    def insert_data(self, initialdata: str) -> None:
        """Apply an initialdata file (Perl) to the running RT, as an operator would."""
        self.setup_database(initialdata)

    # -- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 60.0) -> PrivateRT:
        """Config, DB, data, then rt-server; a port taken between probe and bind is retried."""
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.rest = f"{self.url}/REST/2.0"
        self._write_config()
        self.setup_database()
        self.setup_database(self._initialdata())
        self.token = (self.dir / "token").read_text(encoding="utf-8").strip()
        for attempt in range(3):
            if attempt:
                # WebPort/WebBaseURL follow the port; the DB does not depend on them.
                self.port = _free_port()
                self.url = f"http://{HOST}:{self.port}"
                self.rest = f"{self.url}/REST/2.0"
                self._write_config()
            with self.stderr_path.open("ab") as stderr:
                proc = subprocess.Popen(
                    [
                        str(RT_SERVER),
                        "--host",
                        HOST,
                        "--port",
                        str(self.port),
                        "--max-workers",
                        "2",
                    ],
                    cwd=self.dir,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,
                )
            self._proc, self.pid = proc, proc.pid
            if self._wait_ready(proc, time.monotonic() + timeout):
                return self
            self._proc = self.pid = None
            if "in use" not in self.log() or attempt == 2:
                raise AssertionError(
                    f"rt-server did not start (exit {proc.returncode}):\n{self.log()}"
                )
        raise AssertionError("unreachable")

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """True once GET /REST/2.0/rt answers 200 as root; False if rt-server exited first."""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                status, _ = self.call("GET", "/rt", timeout=2)
            except OSError:
                time.sleep(0.1)
                continue
            if status == 200:
                return True
            time.sleep(0.1)
        self._terminate(proc)
        raise AssertionError(f"rt-server on port {self.port} not ready in time:\n{self.log()}")

    def log_files(self) -> list[Path]:
        return [self.stderr_path, self.log_path]

    def mails(self) -> list[str]:
        """RT's outgoing mail so far (raw messages, oldest first)."""
        return [p.read_text(errors="replace") for p in sorted(self.outmail.iterdir())]

    # -- REST2 as root (token), as the agent (basic auth) ------------------

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: tuple[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, Any]:
        """One REST2 call; `user` means basic auth, else root's token. Returns (status, JSON)."""
        status, _, answer = self.request(method, path, body, user=user, timeout=timeout)
        return status, answer

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: tuple[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], Any]:
        """Like `call`, with the answer's headers (REST2 puts new ids in Location)."""
        url = path if path.startswith("http") else self.rest + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if user is not None:
            pair = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {pair}")
        else:
            request.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                status, headers, raw = answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            status, headers, raw = error.code, dict(error.headers), error.read()
        try:
            return status, headers, json.loads(raw) if raw else None
        except ValueError:
            return status, headers, raw.decode(errors="replace")

    def _expect(self, method: str, path: str, body: Any, want: int) -> Any:
        status, answer = self.call(method, path, body)
        if status != want:
            raise RTError(method, path, status, json.dumps(answer))
        return answer

    def _message(
        self, kind: str, ticket_id: int | str, text: str, attachments: Iterable[Attachment]
    ) -> int:
        """POST correspond/comment as the agent; the transaction id from Location."""
        body: dict[str, Any] = {"Content": text, "ContentType": "text/plain"}
        files = [
            {"FileName": name, "FileType": mime, "FileContent": base64.b64encode(data).decode()}
            for name, mime, data in attachments
        ]
        if files:
            body["Attachments"] = files
        path = f"/ticket/{ticket_id}/{kind}"
        agent = (self.agent, self.agent_password)
        status, headers, answer = self.request("POST", path, body, user=agent)
        location = headers.get("Location", "")  # "/REST/2.0/transaction/N", no host
        if status != 201 or "/transaction/" not in location:
            raise RTError("POST", path, status, f"Location {location!r} {answer!r}")
        return int(location.rstrip("/").rsplit("/", 1)[1])

    def agent_correspond(
        self, ticket_id: int | str, text: str, attachments: Sequence[Attachment] = ()
    ) -> int:
        """Reply to the requestor AS agent1 (so Creator is not the API user); the txn id."""
        return self._message("correspond", ticket_id, text, attachments)

    def agent_comment(
        self, ticket_id: int | str, text: str, attachments: Sequence[Attachment] = ()
    ) -> int:
        """An internal comment AS agent1; the transaction id."""
        return self._message("comment", ticket_id, text, attachments)

    def tickets_with_conversation(self, conversation_id: str) -> list[int]:
        """Ticket ids whose Helpline-Conversation CF equals `conversation_id` (TicketSQL)."""
        query = f"'CF.{{{CONVERSATION_CF}}}' = '{_sql(conversation_id)}'"
        return [int(item["id"]) for item in self.search("tickets", query)]

    def search(self, collection: str, query: str, **params: str) -> list[dict[str, Any]]:
        """Every item of /tickets or /transactions for a query, following next_page."""
        url = f"/{collection}?" + urllib.parse.urlencode(
            {"query": query, "per_page": "100", **params}
        )
        items: list[dict[str, Any]] = []
        while url:
            answer = self._expect("GET", url, None, 200)
            items.extend(answer["items"])
            url = answer.get("next_page") or ""
        return items

    def ticket(self, ticket_id: int | str) -> dict[str, Any]:
        return dict(self._expect("GET", f"/ticket/{ticket_id}", None, 200))

    def history(self, ticket_id: int | str) -> list[dict[str, Any]]:
        """The ticket's transactions, each expanded with Type, Creator (name), Data, Created."""
        fields = "Type,Creator,Data,Created,Field,OldValue,NewValue"
        url = f"/ticket/{ticket_id}/history?" + urllib.parse.urlencode(
            {"per_page": "100", "fields": fields, "fields[Creator]": "Name"}
        )
        items: list[dict[str, Any]] = []
        while url:
            answer = self._expect("GET", url, None, 200)
            items.extend(answer["items"])
            url = answer.get("next_page") or ""
        return items


def _sql(value: str) -> str:
    """Quote a value for a single-quoted TicketSQL/TransactionSQL string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def start_rt() -> PrivateRT:
    """A started PrivateRT for a session- or module-scoped fixture (caller calls .stop())."""
    rt = PrivateRT()
    try:
        return rt.start()
    except BaseException:
        rt.stop()
        raise
