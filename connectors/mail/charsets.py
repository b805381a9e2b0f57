"""Text from the bytes of a mail: charsets that are declared, missing, unknown or lying,
and RFC 2047 encoded words in header fields.

A declared charset is used when it is true; when it is unknown to Python, missing, or
a lie (bytes not valid in it), UTF-8 and then charset-normalizer's detection decide,
never replacement characters where the text can be read. Each repair is noted in the
caller's ``defects`` list.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re

from charset_normalizer import from_bytes

__all__ = ["clean", "decode_text", "decode_words"]

# Labels (by Python's codec name, else as declared) whose real-world use is a superset
# (as browsers and mail clients decode them) or that Python does not know; the first
# candidate that decodes strictly wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "ascii": ("ascii", "cp1252"), "iso8859-1": ("cp1252", "latin-1"),
    "tis-620": ("cp874",), "windows-874": ("cp874",), "iso8859-11": ("cp874",),
    "iso-8859-8-i": ("iso8859-8",), "gb2312": ("gb18030",), "gbk": ("gb18030",),
    "shift_jis": ("cp932",), "x-sjis": ("cp932",), "euc_kr": ("cp949",),
    "iso2022_jp": ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2"),
    "x-mac-roman": ("mac-roman",),
}  # fmt: skip
# What detection may choose from: common mail charsets, Western first.
_DETECT = ["cp1252", "cp1251", "koi8_r", "cp874", "cp932", "euc_jp", "gb18030", "big5",
           "cp949", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257"]  # fmt: skip
_WIDE = ("utf-16", "utf-32", "utf_16", "utf_32")
_SMUGGLED = re.compile("[\udc80-\udcff]")  # bytes >= 0x80 read with surrogateescape
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")


def decode_text(data: bytes, declared: str | None, defects: list[str]) -> str:
    """Bytes to text: the declared charset when it is true, else UTF-8, else detection."""
    label = (declared or "").strip().strip("\"'").lower()
    try:
        name = codecs.lookup(label).name if label else ""
    except (LookupError, ValueError):
        name = label
    candidates = _ALIASES.get(name, (name,) if name else ())
    if not data.isascii() and not label.startswith(_WIDE):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if label not in ("utf-8", "utf8"):
                defects.append(f"charset {label or 'undeclared'} held UTF-8")
            return text
    for n, candidate in enumerate(candidates):
        try:
            text = data.decode(candidate)
        except (LookupError, ValueError):
            continue
        if n:
            defects.append(f"charset {label} read as {candidate}")
        return text
    if data.isascii():
        return data.decode("ascii")
    if len(data) < 256 and sum(b >= 0x80 for b in data) * 4 < len(data):
        try:  # a few 8-bit bytes in short Latin-script text: too little for detection
            text = data.decode("cp1252")
        except ValueError:
            pass
        else:
            defects.append(f"charset {label or 'undeclared'} read as cp1252")
            return text
    best = from_bytes(data, cp_isolation=_DETECT).best()
    if best is not None:
        defects.append(f"charset {label or 'undeclared'} detected as {best.encoding}")
        return str(best)
    defects.append(f"charset {label or 'undeclared'} undecodable")
    try:
        return data.decode(candidates[0] if candidates else "cp1252", "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


def clean(value: str, defects: list[str]) -> str:
    """Text with bytes smuggled in as surrogates (8-bit headers) decoded properly."""
    if value.isascii() or _SMUGGLED.search(value) is None:
        return value
    return decode_text(value.encode("utf-8", "surrogateescape"), None, defects)


def _word_bytes(encoding: str, text: str) -> bytes:
    data = text.encode("ascii", "replace")
    try:
        if encoding in "bB":
            return base64.b64decode(data + b"=" * (-len(data) % 4))
        return binascii.a2b_qp(data, header=True)
    except (binascii.Error, ValueError):
        return data


def decode_words(value: str, defects: list[str]) -> str:
    """RFC 2047 encoded words decoded; adjacent words of one charset decoded together."""
    out: list[str] = []
    run: list[tuple[str, bytes]] = []

    def flush() -> None:
        while run:
            charset, chunk = run.pop(0)
            while run and run[0][0] == charset:
                chunk += run.pop(0)[1]
            out.append(decode_text(chunk, charset, defects))

    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        if not (run and gap.strip() == ""):
            flush()
            out.append(gap)
        run.append((match.group(1).lower(), _word_bytes(match.group(2), match.group(3))))
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)
