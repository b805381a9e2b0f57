"""What a customer wrote now, apart from the history they quoted and their signature.

Mail clients append the whole thread to a reply; showing that again and again
buries the new sentence an agent has to answer. The cut: lines starting with
'>' (quoted, also interleaved in an inline reply), everything from an
attribution line on ("On ... wrote:", "Am ... schrieb ...:", "Le ... a écrit :",
also wrapped onto two lines, "-----Original Message-----" and its German and
French forms), everything from an Outlook header block on ("From:" followed
within 4 lines by "Sent:"/"Date:"/"Gesendet:"/"Envoyé :"), and everything after
a signature delimiter ("-- "). Nothing is thrown away: the rest is kept apart.
"""

from __future__ import annotations

import re

_ATTRIBUTION = re.compile(
    r"""\s*(?:
        on\s.{0,300}\swrote\s*:
      | am\s.{0,300}\sschrieb.{0,200}:
      | le\s.{0,300}\sa\s+écrit\s*:
      | -{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|message\s+d'origine)\s*-{2,}
    )\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_ATTRIBUTION_START = re.compile(r"\s*(?:on|am|le)\s", re.IGNORECASE)
_HEADER_FROM = re.compile(r"\s*(?:from|von|de)\s*:\s*\S", re.IGNORECASE)
_HEADER_SENT = re.compile(r"\s*(?:sent|date|gesendet|datum|envoyé)\s*:", re.IGNORECASE)
_HEADER_LOOKAHEAD = 4


def _history_starts(lines: list[str], i: int) -> bool:
    line = lines[i]
    if line in ("-- ", "--") or _ATTRIBUTION.match(line):
        return True
    wrapped = i + 1 < len(lines) and _ATTRIBUTION_START.match(line)
    if wrapped and _ATTRIBUTION.match(f"{line} {lines[i + 1]}"):
        return True
    return bool(_HEADER_FROM.match(line)) and any(
        _HEADER_SENT.match(nxt) for nxt in lines[i + 1 : i + 1 + _HEADER_LOOKAHEAD]
    )


def split_reply(text: str) -> tuple[str, str]:
    """(the sender's own new text, the quoted history and signature), both stripped."""
    lines = text.splitlines()
    own: list[str] = []
    quoted: list[str] = []
    for i, line in enumerate(lines):
        if _history_starts(lines, i):
            quoted.extend(lines[i:])
            break
        (quoted if line.lstrip().startswith(">") else own).append(line)
    return "\n".join(own).strip(), "\n".join(quoted).strip()
