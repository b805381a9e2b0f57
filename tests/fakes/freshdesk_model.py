"""Freshdesk API v2 rules the fake applies: codes, validation answers, search queries.

Pure functions, no state: the fake (tests/fakes/freshdesk.py) calls them under its lock.
Facts follow /work/shared/reference/backends.md section 6; the wording of error messages
is Freshdesk's as far as known (◐ where the reference marks it uncertain).
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import re
import time
from collections.abc import Callable
from typing import Any

# §6.2 codes.
STATUSES = {2: "Open", 3: "Pending", 4: "Resolved", 5: "Closed"}
PRIORITIES = {1: "Low", 2: "Medium", 3: "High", 4: "Urgent"}
SOURCES = {
    1: "Email",
    2: "Portal",
    3: "Phone",
    7: "Chat",
    9: "Feedback Widget",
    10: "Outbound Email",
}
# Conversation `source`: 0 reply, 2 note (python-freshdesk sample data, ◐).
CONV_REPLY, CONV_NOTE = 0, 2
# One of these names the requester of a new ticket (§6.3).
REQUESTER_KEYS = (
    "requester_id",
    "email",
    "phone",
    "twitter_id",
    "facebook_id",
    "unique_external_id",
)
TICKET_KEYS = {
    *REQUESTER_KEYS,
    "name",
    "subject",
    "description",
    "status",
    "priority",
    "source",
    "tags",
    "custom_fields",
    "cc_emails",
    "type",
    "group_id",
    "responder_id",
    "company_id",
    "product_id",
    "email_config_id",
    "due_by",
    "fr_due_by",
    "attachments",
}
CONTACT_KEYS = {
    "name",
    "email",
    "phone",
    "mobile",
    "twitter_id",
    "unique_external_id",
    "other_emails",
    "address",
    "description",
    "job_title",
    "language",
    "time_zone",
    "tags",
    "company_id",
    "custom_fields",
}
# A text custom field holds at most 255 characters ◐.
TEXT_MAX = 255
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024  # per request ◐
UNAUTHORIZED = {
    "code": "invalid_credentials",
    "message": "You have to be logged in to perform this action.",
}
# The 429 body is not documented in the reference ◐: a backend must rely on the status and
# the Retry-After header only.
THROTTLED = {"code": "rate_limit_exceeded", "message": "You have exceeded the rate limit."}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class FdError(Exception):
    """An answer in Freshdesk's shape, raised from deep in validation."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def invalid(*errors: tuple[str, str, str], status: int = 400, **extra: Any) -> FdError:
    """`{"description": "Validation failed", "errors": [{field, message, code}]}` (§6.6)."""
    items = [{"field": f, "message": m, "code": c} for f, m, c in errors]
    for item in items:
        item.update(extra)
    return FdError(status, {"description": "Validation failed", "errors": items})


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def text_of(body: str) -> str:
    """`body_text`: the HTML body without tags."""
    return html.unescape(re.sub(r"<[^>]+>", "", body)).strip()


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    if value is None:
        return "Null"
    return "key/value pair"


def mismatch(field: str, value: Any, expected: str) -> tuple[str, str, str]:
    message = f"Value set is of type {type_name(value)}.It should be a/an {expected}"
    return (field, message, "datatype_mismatch")


def check_code(
    errors: list[tuple[str, str, str]], body: dict[str, Any], key: str, allowed: set[int]
) -> None:
    """status / priority / source: an integer among the documented codes."""
    if key not in body:
        return
    value = body[key]
    if not isinstance(value, int) or isinstance(value, bool):
        errors.append(mismatch(key, value, "Integer"))
    elif value not in allowed:
        listed = ",".join(str(v) for v in sorted(allowed))
        errors.append((key, f"It should be one of these values: '{listed}'", "invalid_value"))


def check_ticket(
    body: dict[str, Any],
    *,
    creating: bool,
    fields: dict[str, str],
    required: tuple[str, ...],
    statuses: set[int],
) -> None:
    """Validate a ticket create/update body; raise the 400 Freshdesk answers."""
    errors: list[tuple[str, str, str]] = [
        (key, "Unexpected/invalid field in request", "invalid_field")
        for key in body
        if key not in TICKET_KEYS
    ]
    if creating and not any(body.get(k) not in (None, "") for k in REQUESTER_KEYS):
        listed = ", ".join(REQUESTER_KEYS)
        message = f"Please fill at least 1 of {listed} fields"
        errors.append(("requester_id", message, "missing_field"))
    check_code(errors, body, "status", statuses)
    check_code(errors, body, "priority", set(PRIORITIES))
    check_code(errors, body, "source", set(SOURCES))
    for key in ("subject", "description", "name", "email", "phone", "unique_external_id"):
        if key in body and not isinstance(body[key], str):
            errors.append(mismatch(key, body[key], "String"))
    if isinstance(body.get("email"), str) and not EMAIL.match(body["email"]):
        errors.append(
            ("email", "It should be in the 'valid email address' format", "invalid_value")
        )
    for key in ("tags", "cc_emails"):
        value = body.get(key)
        if key in body and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            errors.append(mismatch(key, value, "Array"))
    custom = body.get("custom_fields", {})
    if not isinstance(custom, dict):
        errors.append(mismatch("custom_fields", custom, "key/value pair"))
        custom = {}
    errors += check_custom(custom, fields)
    for key in required if creating else ():
        present = custom.get(key) if key.startswith("cf_") else body.get(key)
        if present in (None, "", []):
            errors.append((key, "It should be a/an String", "missing_field"))
    if errors:
        raise invalid(*errors)


def check_custom(custom: dict[str, Any], fields: dict[str, str]) -> list[tuple[str, str, str]]:
    """cf_* values against the configured field types (text, number, checkbox)."""
    errors: list[tuple[str, str, str]] = []
    for key, value in custom.items():
        kind = fields.get(key)
        if kind is None:
            errors.append((key, "Unexpected/invalid field in request", "invalid_field"))
        elif value is None:
            continue
        elif kind == "text" and not isinstance(value, str):
            errors.append(mismatch(key, value, "String"))
        elif kind == "text" and len(value) > TEXT_MAX:
            message = f"Has {len(value)} characters, it can have maximum of {TEXT_MAX} characters"
            errors.append((key, message, "invalid_value"))
        elif kind == "number" and (not isinstance(value, int) or isinstance(value, bool)):
            errors.append(mismatch(key, value, "Integer"))
        elif kind == "checkbox" and not isinstance(value, bool):
            errors.append(mismatch(key, value, "Boolean"))
    return errors


def check_contact(body: dict[str, Any], *, creating: bool) -> None:
    errors: list[tuple[str, str, str]] = [
        (key, "Unexpected/invalid field in request", "invalid_field")
        for key in body
        if key not in CONTACT_KEYS
    ]
    if creating and not body.get("name"):
        errors.append(("name", "It should be a/an String", "missing_field"))
    ids = ("email", "phone", "mobile", "twitter_id", "unique_external_id")
    if creating and not any(body.get(k) for k in ids):
        message = (
            "Please fill at least 1 of email, mobile, phone, twitter_id, unique_external_id fields"
        )
        errors.append(("email", message, "missing_field"))
    for key in ("name", *ids):
        if key in body and body[key] is not None and not isinstance(body[key], str):
            errors.append(mismatch(key, body[key], "String"))
    if isinstance(body.get("email"), str) and not EMAIL.match(body["email"]):
        errors.append(
            ("email", "It should be in the 'valid email address' format", "invalid_value")
        )
    if errors:
        raise invalid(*errors)


def from_form(
    content_type: str, raw: bytes, kinds: dict[str, str]
) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
    """A multipart/form-data body as the JSON body it stands for, plus its `attachments[]`.

    Freshdesk's form encoding: `tags[]`, `cc_emails[]` repeat, `custom_fields[cf_x]` nest;
    everything arrives as text, read back by the field's type (`kinds`: custom field types).
    """
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise FdError(400, {"code": "invalid_json", "message": "Request body has invalid format"})
    body: dict[str, Any] = {}
    files: list[tuple[str, str, bytes]] = []
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition") or "")
        data = part.get_payload(decode=True)
        payload = data if isinstance(data, bytes) else b""
        if name == "attachments[]":
            filename = part.get_filename() or "attachment"
            files.append((filename, part.get_content_type(), payload))
            continue
        value = payload.decode()
        if name.endswith("[]"):
            body.setdefault(name[:-2], []).append(value)
        elif match := re.fullmatch(r"custom_fields\[(\w+)\]", name):
            key = match.group(1)
            body.setdefault("custom_fields", {})[key] = _typed(value, kinds.get(key, "text"))
        else:
            kind = "number" if name in INT_KEYS else "checkbox" if name in BOOL_KEYS else "text"
            body[name] = _typed(value, kind)
    return body, files


INT_KEYS = {"status", "priority", "source", "requester_id", "responder_id", "group_id"}
INT_KEYS |= {"company_id", "product_id", "email_config_id", "user_id"}
BOOL_KEYS = {"private", "incoming"}


def _typed(value: str, kind: str) -> Any:
    if kind == "number" and value.lstrip("-").isdigit():
        return int(value)
    if kind == "checkbox" and value in ("true", "false"):
        return value == "true"
    return value


# -- search API (§6.3: query ≤ 512 chars, 30 results a page, at most 10 pages) ----------

TOKEN = re.compile(r"\s*(?:(\()|(\))|(AND|OR)\b|(\w+):([<>]?)('(?:[^'\\]|\\.)*'|[\w.-]+))")
Predicate = Callable[[dict[str, Any]], bool]


def parse_query(
    raw: str | None, known: Callable[[str], bool], lookup: Callable[[dict[str, Any], str], Any]
) -> Predicate:
    """`"cf_x:'v' AND (status:2 OR status:3)"` → a predicate; 400 as Freshdesk answers it.

    `known` says which fields the index holds; `lookup` reads one from a row.
    """

    def bad(message: str) -> FdError:
        return invalid(("query", message, "invalid_value"))

    if raw is None:
        raise invalid(("query", "It should be a/an String", "missing_field"))
    if len(raw) < 2 or raw[0] != '"' or raw[-1] != '"':
        raise bad("It should be enclosed in double quotes")
    text = raw[1:-1]
    if len(text) > 512:
        raise bad(f"Has {len(text)} characters, it can have maximum of 512 characters")
    tokens: list[tuple[str, Any]] = []
    at = 0
    while at < len(text.rstrip()):
        match = TOKEN.match(text, at)
        if not match:
            raise bad("Invalid query syntax")
        at = match.end()
        opened, closed, conj, field, op, value = match.groups()
        if opened or closed:
            tokens.append(("paren", opened or closed))
        elif conj:
            tokens.append(("conj", conj))
        elif not known(field):
            raise bad(f"'{field}' is not a valid field")  # wording ◐
        else:
            tokens.append(("term", (field, op, _literal(value))))

    def term(item: tuple[str, str, Any]) -> Predicate:
        field, op, value = item
        if op == ">":
            return lambda row: _cmp(lookup(row, field), value) > 0
        if op == "<":
            return lambda row: _cmp(lookup(row, field), value) < 0
        return lambda row: _matches(lookup(row, field), value)

    def expr(pos: int) -> tuple[Predicate, int]:
        left, pos = atom(pos)
        while pos < len(tokens) and tokens[pos][0] == "conj":
            conj = tokens[pos][1]
            right, pos = atom(pos + 1)
            left = _join(conj, left, right)
        return left, pos

    def atom(pos: int) -> tuple[Predicate, int]:
        if pos >= len(tokens):
            raise bad("Invalid query syntax")
        kind, value = tokens[pos]
        if kind == "term":
            return term(value), pos + 1
        if value != "(":
            raise bad("Invalid query syntax")
        inner, pos = expr(pos + 1)
        if pos >= len(tokens) or tokens[pos] != ("paren", ")"):
            raise bad("Invalid query syntax")
        return inner, pos + 1

    predicate, end = expr(0)
    if end != len(tokens):
        raise bad("Invalid query syntax")
    return predicate


def _join(conj: str, a: Predicate, b: Predicate) -> Predicate:
    if conj == "AND":
        return lambda row: a(row) and b(row)
    return lambda row: a(row) or b(row)


def _literal(value: str) -> Any:
    if value.startswith("'"):
        return value[1:-1].replace("\\'", "'")
    if value == "null":
        return None
    if value in ("true", "false"):
        return value == "true"
    return int(value) if value.lstrip("-").isdigit() else value


def _matches(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, list):  # tag:'x' matches one of the tags
        return wanted in actual
    if isinstance(actual, str) and isinstance(wanted, str):
        return actual.lower() == wanted.lower()
    return bool(actual == wanted)


def _cmp(actual: Any, wanted: Any) -> int:
    if actual is None:
        return 0
    left, right = (str(actual)[:10], str(wanted)) if isinstance(wanted, str) else (actual, wanted)
    return (left > right) - (left < right)
