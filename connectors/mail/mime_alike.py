"""Whether compat32 reads a parsed mail exactly as policy.default would (see parse.py).

``policy.default`` parses a header field again at every read, which makes the
structure of a multipart mail cost ten times what ``compat32`` does. The two
read a MIME field alike when it is plain: ASCII tokens and quoted strings, no
comments, encoded words or RFC 2231 parameters, no repeated parameter. This
module decides that, part by part, and switches a leaf whose fields are not
plain to ``policy.default`` (parsing each field once).
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from typing import TYPE_CHECKING

MAX_DEPTH = 40

# MIME fields that compat32 and policy.default read alike (see the module docstring).
_WS = r"(?:[ \t]|(?:\r\n|\r|\n)(?=[ \t]))*"  # white space, folded or not
_TOKEN = r"[A-Za-z0-9!#$&+.^_`{|}~-]+"  # RFC 2045 token without ' * % (RFC 2231)
_QUOTED = r'"[ !#-\[\]-~]*"'  # printable ASCII without a quote or a backslash
_PARAMS = rf"(?:;{_WS}[A-Za-z0-9][A-Za-z0-9._-]*=(?:{_TOKEN}|{_QUOTED}){_WS})*"
_PLAIN_MIME = {
    "content-type": re.compile(rf"{_WS}{_TOKEN}/{_TOKEN}{_WS}{_PARAMS}"),
    "content-disposition": re.compile(rf"{_WS}{_TOKEN}{_WS}{_PARAMS}"),
    "content-transfer-encoding": re.compile(_TOKEN),
}
_PARAM_NAME = re.compile(r";\s*([^=\s]+)=")

if TYPE_CHECKING:  # generic in typeshed only
    _EmailPolicy = EmailPolicy[EmailMessage]
else:
    _EmailPolicy = EmailPolicy


class _DefaultOnce(_EmailPolicy):
    """policy.default that parses a field of its part once, not at every read: a leaf
    part switched to it is read several times. Its header objects are immutable, so
    handing the same one out again reads exactly as parsing anew."""

    def __init__(self) -> None:
        super().__init__(
            header_factory=policy.default.header_factory,
            message_factory=EmailMessage,
        )
        object.__setattr__(self, "_parsed", {})

    def header_fetch_parse(self, name: str, value: str) -> str:
        parsed: dict[tuple[str, str], str] = self._parsed  # type: ignore[attr-defined]
        key = (name, value)
        if key not in parsed:
            parsed[key] = super().header_fetch_parse(name, value)
        return parsed[key]


def plain(part: Message, name: str) -> bool:
    """Whether compat32 and policy.default read this MIME field of a part alike."""
    value = part.get(name)
    if value is None:
        return True
    if not isinstance(value, str) or not _PLAIN_MIME[name].fullmatch(value) or "=?" in value:
        return False
    names = [n.lower() for n in _PARAM_NAME.findall(value)]
    return len(names) == len(set(names))


def read_alike(part: Message, depth: int = 0) -> bool:
    """Whether a tree parsed with compat32 reads as policy.default would have parsed and
    read it. A leaf whose MIME fields are not plain is switched to policy.default (it is
    a leaf under both: its type says so under both); a container must be plain."""
    if depth > MAX_DEPTH + 1:
        return False
    maintype = part.get_content_maintype()
    if maintype in ("multipart", "message") or part.is_multipart():
        if not (plain(part, "content-type") and plain(part, "content-transfer-encoding")):
            return False
        inner = part.get_payload()
        children = inner if isinstance(inner, list) else []
        return all(isinstance(c, Message) and read_alike(c, depth + 1) for c in children)
    if all(plain(part, name) for name in _PLAIN_MIME):
        return True
    part.policy = _DefaultOnce()  # every field of this leaf read as policy.default reads it
    return part.get_content_maintype() == maintype
