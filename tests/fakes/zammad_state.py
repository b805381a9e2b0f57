"""State of the fake Zammad: users, tickets, articles, tokens; accessors and agent replies.

Handlers run on the fake's thread and tests read from theirs: every helper here expects
`self.lock` to be held (the public accessors take it themselves).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tests.fakes.harness import FakeService, Status
from tests.fakes.zammad_hooks import Webhook, ZammadHooks

API = "/api/v1"
ROLES = {1: "Admin", 2: "Agent", 3: "Customer"}
STATES = {1: "new", 2: "open", 3: "pending reminder", 4: "closed", 5: "merged", 7: "pending close"}
PRIORITIES = {1: "1 low", 2: "2 normal", 3: "3 high"}
SENDERS = {1: "Agent", 2: "Customer", 3: "System"}
TYPES = {1: "email", 2: "sms", 3: "chat", 4: "fax", 5: "phone", 10: "note", 11: "web"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TICKET_COLUMNS = [
    "id", "number", "title", "state_id", "priority_id", "group_id", "owner_id", "customer_id",
    "organization_id", "created_at", "updated_at", "created_by_id", "updated_by_id",
    "article_count",
]  # fmt: skip
ARTICLE_COLUMNS = [
    "id", "ticket_id", "type_id", "sender_id", "from", "to", "cc", "subject", "message_id",
    "in_reply_to", "content_type", "body", "internal", "created_by_id", "origin_by_id",
    "created_at",
]  # fmt: skip
USER_COLUMNS = [
    "id",
    "login",
    "firstname",
    "lastname",
    "email",
    "phone",
    "mobile",
    "note",
    "active",
]


class ZammadError(Exception):
    """An answer in Zammad's error shape; `human` False leaves `error_human` out (raw errors)."""

    def __init__(self, status: int, error: str, *, human: bool = True) -> None:
        super().__init__(error)
        self.status, self.error, self.human = status, error, human


def _lookup(table: dict[int, str], name: str, value: Any) -> int:
    for key, label in table.items():
        if label == value:
            return key
    raise ZammadError(422, f"No lookup value found for '{name}': {_inspect(value)}")


def _inspect(value: Any) -> str:
    """A value as Ruby's `inspect` shows it in Zammad's messages (strings double-quoted)."""
    return orjson.dumps(value).decode()


def _not_found(model: str, ident: Any) -> ZammadError:
    return ZammadError(404, f"Couldn't find {model} with 'id'={ident}")


def _text(value: Any) -> str:
    """A value as SQL compares it to a bound string (booleans as Rails writes them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class Ctx:
    user: dict[str, Any]  # the acting user (the `From` user when impersonating)

    @property
    def agent(self) -> bool:
        return bool({1, 2} & set(self.user["role_ids"]))

    @property
    def admin(self) -> bool:
        return 1 in self.user["role_ids"]


class ZammadState(ZammadHooks, FakeService):
    """The fake's data and what tests read from it; FakeZammad (zammad.py) adds the routes."""

    def __init__(
        self,
        *,
        token: str = "zammad-api-token",
        api_roles: Iterable[str] = ("Admin", "Agent"),
        ticket_attributes: Iterable[str] = ("helpline_cid",),
        groups: Iterable[str] = ("Users", "Support"),
        api_token_access: bool = True,
        elasticsearch: bool = False,
        search_index_lag: float = 2.0,
        time_scale: float = 0.01,
        webhook_timeout: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(**({"clock": clock} if clock else {}))
        self._init_hooks()
        self.ticket_attributes = list(ticket_attributes)  # the fake's object manager (Ticket)
        self.groups = {i + 1: name for i, name in enumerate(groups)}
        self.api_token_access = api_token_access  # setting api_token_access
        # Users search without Elasticsearch is SQL LIKE over firstname/lastname/email/login only;
        # with ES (◐ query syntax) phone and mobile are searched too.
        self.elasticsearch = elasticsearch
        # ◐ plain `query` ticket search is served by the (asynchronous) search index: a ticket is
        # invisible to it for this many seconds (fake.clock) after creation. `condition` is not.
        self.search_index_lag = search_index_lag
        self.time_scale = time_scale  # webhook retry waits are attempt * 10 s * time_scale
        self.webhook_timeout = webhook_timeout
        self.users_: dict[int, dict[str, Any]] = {}
        self.tickets_: dict[int, dict[str, Any]] = {}
        self.articles_: dict[int, dict[str, Any]] = {}
        self.files: dict[int, tuple[str, str, bytes]] = {}  # attachment id → name, type, data
        self.tokens: dict[str, tuple[int, float | None]] = {}  # token → user id, expires_at
        self._seq = {"user": 0, "ticket": 0, "article": 0, "file": 0}
        self.add_user(login="-", roles=("Admin",), active=False)  # id 1, Zammad's system user
        self.api_user_id = self.add_user(
            login="helpline@example.com", firstname="Helpline", lastname="API",
            email="helpline@example.com", roles=api_roles, token=token,
        )  # fmt: skip
        self.agent_id = self.add_user(
            login="agent@example.com", firstname="Ada", lastname="Agent",
            email="agent@example.com", roles=("Agent",),
        )  # fmt: skip

    # -- plumbing ------------------------------------------------------------
    def _next(self, kind: str) -> int:
        self._seq[kind] += 1
        return self._seq[kind]

    def _now(self) -> str:
        stamp = datetime.fromtimestamp(self.clock(), UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"

    def stop(self) -> None:
        self._cancel_deliveries()
        super().stop()

    def throttle(self, n_requests: int, retry_after: float | None = None) -> None:
        """◐ Zammad documents no REST rate limit; Rack::Attack throttles answer a plain
        `429 Retry later` (Retry-After only where configured)."""
        headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
        self.arm(Status(429, "Retry later\n", headers), times=n_requests)

    # -- state helpers (call under the lock) --------------------------------
    def add_user(
        self,
        *,
        login: str | None = None,
        email: str = "",
        firstname: str = "",
        lastname: str = "",
        phone: str = "",
        mobile: str = "",
        roles: Iterable[str] = ("Customer",),
        token: str | None = None,
        active: bool = True,
        note: str = "",
    ) -> int:
        """Seed a user (agents for `agent_reply`, customers, a token for a second API user)."""
        with self.lock:
            uid = self._next("user")
            now = self._now()
            self.users_[uid] = {
                "id": uid, "login": (login or email or f"auto-{uid}").lower(),
                "firstname": firstname, "lastname": lastname, "email": email.lower(),
                "phone": phone, "mobile": mobile, "note": note, "active": active,
                "organization_id": None, "vip": False, "verified": False, "out_of_office": False,
                "role_ids": [_lookup(ROLES, "roles", r) for r in roles], "group_ids": {},
                "created_by_id": 1, "updated_by_id": 1, "created_at": now, "updated_at": now,
            }  # fmt: skip
            if token:
                self.tokens[token] = (uid, None)
            return uid

    def expire_token(self, token: str) -> None:
        with self.lock:
            self.tokens[token] = (self.tokens[token][0], self.clock() - 1)

    def _user(self, uid: int) -> dict[str, Any]:
        if uid not in self.users_:
            raise _not_found("User", uid)
        return self.users_[uid]

    def _user_by(self, ident: str) -> dict[str, Any] | None:
        ident = ident.strip().lower()
        if ident.isdigit() and int(ident) in self.users_:
            return self.users_[int(ident)]
        return next((u for u in self.users_.values() if ident in (u["login"], u["email"])), None)

    def _ticket(self, tid: int, ctx: Ctx | None = None) -> dict[str, Any]:
        if tid not in self.tickets_:
            raise _not_found("Ticket", tid)
        ticket = self.tickets_[tid]
        if ctx is not None and not ctx.agent and ticket["customer_id"] != ctx.user["id"]:
            raise ZammadError(403, "Not authorized")
        return ticket

    def _name(self, uid: int | None) -> str:
        user = self.users_.get(uid or 0)
        return f"{user['firstname']} {user['lastname']}".strip() if user else ""

    # -- serialisation --------------------------------------------------------
    def _ticket_json(self, ticket: dict[str, Any], expand: bool = False) -> dict[str, Any]:
        data = {k: copy.deepcopy(v) for k, v in ticket.items() if not k.startswith("_")}
        data["article_ids"] = [
            a for a, art in self.articles_.items() if art["ticket_id"] == data["id"]
        ]
        data["article_count"] = len(data["article_ids"])
        if expand:
            data.update(
                state=STATES[ticket["state_id"]], priority=PRIORITIES[ticket["priority_id"]],
                group=self.groups.get(ticket["group_id"]),
                owner=self.users_[ticket["owner_id"]]["login"],
                customer=self.users_[ticket["customer_id"]]["login"],
                created_by=self.users_[ticket["created_by_id"]]["login"],
                updated_by=self.users_[ticket["updated_by_id"]]["login"],
            )  # fmt: skip
        return data

    def _article_json(self, article: dict[str, Any]) -> dict[str, Any]:
        data = {k: copy.deepcopy(v) for k, v in article.items() if not k.startswith("_")}
        data["attachments"] = [
            {"id": fid, "filename": self.files[fid][0], "size": str(len(self.files[fid][2])),
             "preferences": {"Mime-Type": self.files[fid][1]}}
            for fid in article["_files"]
        ]  # fmt: skip
        by = {k: self.users_.get(article[f"{k}_id"] or 0) for k in ("created_by", "origin_by")}
        data.update(
            type=TYPES[article["type_id"]], sender=SENDERS[article["sender_id"]],
            created_by=by["created_by"]["login"] if by["created_by"] else None,
            updated_by=by["created_by"]["login"] if by["created_by"] else None,
            origin_by=by["origin_by"]["login"] if by["origin_by"] else None,
        )  # fmt: skip
        return data

    def _prepare_article(
        self, params: dict[str, Any], ctx: Ctx
    ) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
        """Check and clean article params as creates_ticket_articles.rb does, before any commit."""
        if params.get("body") is None:
            raise ZammadError(422, "Need at least an 'article body' field.")
        fields = dict(params)
        if not fields.get("type_id") and not fields.get("type"):
            fields["type"] = "note"
        if not fields.get("sender_id") and not fields.get("sender"):
            fields["sender"] = "Agent" if ctx.agent else "Customer"
        for name, table in (("type", TYPES), ("sender", SENDERS)):
            if fields.get(name):
                fields[f"{name}_id"] = _lookup(table, name, fields.pop(name))
            if fields[f"{name}_id"] not in table:
                raise ZammadError(
                    422, f"Invalid value for param '{name}_id': {fields[f'{name}_id']}"
                )
        if fields.get("origin_by_id") and fields["origin_by_id"] not in self.users_:
            raise ZammadError(
                422, f"Invalid value for param 'origin_by_id': {fields['origin_by_id']}"
            )
        keep = set(ARTICLE_COLUMNS) - {"id", "ticket_id", "created_at", "created_by_id"}
        clean = {k: v for k, v in fields.items() if k in keep | {"reply_to", "references"}}
        if not ctx.agent:  # customers: sender Customer, type note|web, never internal
            clean["sender_id"] = 2
            clean.pop("origin_by_id", None)
            if TYPES[clean["type_id"]] not in ("note", "web"):
                clean["type_id"] = 10
            clean["internal"] = False
        files = []
        for index, item in enumerate(params.get("attachments") or []):
            for key in ("mime-type", "filename", "data"):
                if not item.get(key):
                    raise ZammadError(
                        422, f"Attachment needs '{key}' param for attachment with index '{index}'"
                    )
            try:
                data = base64.b64decode(re.sub(r"[\r\n]", "", item["data"]), validate=True)
            except (binascii.Error, ValueError) as err:
                msg = f"Invalid base64 for attachment with index '{index}'"
                raise ZammadError(422, msg) from err
            files.append((str(item["filename"]), str(item["mime-type"]), data))
        return clean, files

    def _store_article(
        self,
        ticket: dict[str, Any],
        fields: dict[str, Any],
        uid: int,
        files: list[tuple[str, str, bytes]],
    ) -> dict[str, Any]:
        """Commit an article (fields already cleaned); the ticket's updated_* follow it."""
        for name, table in (("type", TYPES), ("sender", SENDERS)):
            if name in fields:
                fields[f"{name}_id"] = _lookup(table, name, fields.pop(name))
        aid, now = self._next("article"), self._now()
        article: dict[str, Any] = {c: None for c in ARTICLE_COLUMNS}
        article.update(content_type="text/plain", internal=False, origin_by_id=None)
        article.update(fields, id=aid, ticket_id=ticket["id"], created_by_id=uid)
        article.update(created_at=now, updated_at=now, updated_by_id=uid, preferences={})
        # ◐ adds_metadata_origin_by_id: an agent writing as Customer acts for the ticket's customer
        if (
            article["sender_id"] == 2
            and not article["origin_by_id"]
            and uid != ticket["customer_id"]
        ):
            article["origin_by_id"] = ticket["customer_id"]
        if not article["from"] and TYPES[article["type_id"]] != "email":
            article["from"] = self._name(article["origin_by_id"] or uid)
        if article["message_id"]:
            article["message_id_md5"] = hashlib.md5(
                article["message_id"].encode(), usedforsecurity=False
            ).hexdigest()
        article["_files"] = []
        for name, ctype, data in files:
            fid = self._next("file")
            self.files[fid] = (name, ctype, data)
            article["_files"].append(fid)
        self.articles_[aid] = article
        ticket.update(updated_at=now, updated_by_id=uid)
        return article

    @staticmethod
    def _user_json(user: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(user)

    # -- accessors for assertions ---------------------------------------------
    def tickets(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._ticket_json(t, expand=True) for t in self.tickets_.values()]

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        with self.lock:
            return self._ticket_json(self._ticket(ticket_id), expand=True)

    def tickets_with(self, value: str, attribute: str | None = None) -> list[dict[str, Any]]:
        """Tickets whose helpline attribute (default: the first configured) equals `value`."""
        name = attribute or self.ticket_attributes[0]
        return [t for t in self.tickets() if t.get(name) == value]

    def articles(self, ticket_id: int) -> list[dict[str, Any]]:
        """Articles with sender/type names, `internal`, author ids and attachment bytes."""
        with self.lock:
            out = []
            for art in self.articles_.values():
                if art["ticket_id"] == ticket_id:
                    data = self._article_json(art)
                    data["attachments"] = [
                        {"id": f, "filename": self.files[f][0], "content_type": self.files[f][1],
                         "data": self.files[f][2]} for f in art["_files"]
                    ]  # fmt: skip
                    out.append(data)
            return out

    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._user_json(u) for u in self.users_.values()]

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        with self.lock:
            user = next((u for u in self.users_.values() if u["email"] == email.lower()), None)
            return self._user_json(user) if user else None

    # -- agent replies ----------------------------------------------------------
    def agent_reply(
        self,
        ticket_id: int,
        text: str,
        *,
        public: bool = True,
        attachments: Iterable[tuple[str, str, bytes]] = (),
        author: int | None = None,
        type: str = "note",
        content_type: str = "text/plain",
    ) -> dict[str, Any]:
        """An agent writes on the ticket (UI): the article is stored, then the trigger is run."""
        with self.lock:
            uid = author or self.agent_id
            fields = {"body": text, "internal": not public, "type": type, "sender": "Agent",
                      "content_type": content_type, "from": self._name(uid)}  # fmt: skip
            article = self._store_article(self._ticket(ticket_id), fields, uid, list(attachments))
            self._fire(ticket_id, article["id"], created=False)
            return self._article_json(article)

    def _trigger_matches(self, hook: Webhook, ticket_id: int, article_id: int) -> bool:
        ticket, article = self.tickets_[ticket_id], self.articles_[article_id]
        if hook.sender and SENDERS[article["sender_id"]] != hook.sender:
            return False
        if hook.public_only and article["internal"]:
            return False
        if not hook.attribute_set:
            return True
        return bool(self.ticket_attributes) and bool(ticket.get(self.ticket_attributes[0]))

    def _webhook_payload(self, ticket_id: int, article_id: int) -> dict[str, Any]:
        """Default payload: the ticket with names and user objects, the article with links."""
        strip = ("last_login", "login_failed", "password", "preferences", "group_ids")

        def person(uid: int | None) -> dict[str, Any] | None:
            user = self.users_.get(uid or 0)
            return {k: v for k, v in user.items() if k not in strip} if user else None

        ticket = self._ticket_json(self.tickets_[ticket_id], expand=True)
        for key in ("customer", "owner", "created_by", "updated_by"):
            ticket[key] = person(ticket[f"{key}_id"])
        article = self._article_json(self.articles_[article_id])
        for key in ("created_by", "updated_by", "origin_by"):
            article[key] = person(article.get(f"{key}_id", article["created_by_id"]))
        for item in article["attachments"]:
            item["url"] = f"{self.url}{API}/ticket_attachment/{ticket_id}/{article_id}/{item['id']}"
        return {"ticket": ticket, "article": article}
