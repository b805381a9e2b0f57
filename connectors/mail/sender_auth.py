"""Whether a mail's From is who it claims, as an MTA we trust checked it (DMARC).

Only an Authentication-Results field added by a configured trusted host
counts (its authserv-id): anyone can write such a field into a mail, so the
first one from a trusted host, the outermost it added, is the one believed.
A DMARC pass for the From domain is verified evidence (it may merge contacts);
a fail means the sender is not who they claim.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Literal

from connectors.mail.parse import header_fields

Verdict = Literal["pass", "fail"]

_RESULT = re.compile(r"\bdmarc\s*=\s*([a-z]+)", re.IGNORECASE)
_HEADER_FROM = re.compile(r"\bheader\.from\s*=\s*([^\s;]+)", re.IGNORECASE)
_COMMENT = re.compile(r"\([^()]*\)")


def dmarc_verdict(
    raw: bytes | Message, from_email: str | None, trusted: frozenset[str]
) -> Verdict | None:
    """ "pass" or "fail" from the first trusted Authentication-Results, else None (unknown).
    ``raw``: the mail, or its `header_fields` when the caller has them already."""
    if not trusted or not from_email:
        return None
    headers = header_fields(raw) if isinstance(raw, bytes) else raw
    domain = from_email.rpartition("@")[2].lower()
    for field in headers.get_all("Authentication-Results") or []:
        text = _COMMENT.sub("", " ".join(str(field).split()))
        authserv, _, results = text.partition(";")
        if authserv.strip().split(" ")[0].lower() not in trusted:
            continue
        for resinfo in results.split(";"):
            found = _RESULT.search(resinfo)
            if not found:
                continue
            claimed = _HEADER_FROM.search(resinfo)
            if claimed and claimed.group(1).strip().lower() != domain:
                return "fail"  # the check was about another domain than the From we see
            result = found.group(1).lower()
            return "pass" if result == "pass" else "fail" if result == "fail" else None
        return None
    return None
