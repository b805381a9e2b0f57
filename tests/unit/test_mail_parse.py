"""Mail parsing over the hand-made corpus, the dedup key, and parse_mail never raising."""

from __future__ import annotations

import dataclasses
import email.policy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.mail import parse
from connectors.mail.dedup import content_digest, dedup_key, message_id_of, normalize_msgid
from connectors.mail.dsn import read_report
from connectors.mail.hooks import RecipientPolicy
from connectors.mail.loops import classify
from connectors.mail.parse import (
    AttachmentInfo,
    ParsedMail,
    header_fields,
    parse_mail,
    parse_with_headers,
)
from connectors.mail.sender_auth import dmarc_verdict

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "mail"
CASES = sorted(CORPUS.glob("*.eml"))
FIELDS = {f.name for f in dataclasses.fields(ParsedMail)}


def _strings(mail: ParsedMail) -> list[str]:
    values: list[Any] = [getattr(mail, name) for name in FIELDS]
    values += [dataclasses.astuple(a) for a in mail.attachments]
    out: list[str] = []
    for value in values:
        items = value if isinstance(value, list | tuple) else [value]
        out += [v for v in items if isinstance(v, str)]
    return out


def _readable(mail: ParsedMail) -> None:
    """Every text field is encodable text: no lone surrogates smuggled from 8-bit bytes."""
    for value in _strings(mail):
        value.encode("utf-8")


def test_the_corpus_covers_enough_cases() -> None:
    assert len(CASES) >= 15
    for eml in CASES:
        assert eml.with_suffix(".json").is_file(), eml.name


@pytest.mark.parametrize("eml", CASES, ids=[p.stem for p in CASES])
def test_corpus_message(eml: Path) -> None:
    expected: dict[str, Any] = json.loads(eml.with_suffix(".json").read_text("utf-8"))
    mail = parse_mail(eml.read_bytes())
    _readable(mail)
    for value in _strings(mail):
        assert "\ufffd" not in value, f"replacement character in {value!r}"
    assert mail.date is None or mail.date.tzinfo is not None
    for key, want in expected.items():
        if key in ("attachments",):
            meta = [
                {k: v for k, v in dataclasses.asdict(a).items() if k != "data"}
                for a in mail.attachments
            ]
            assert meta == want
            assert all(len(a.data) == a.size for a in mail.attachments)
        elif key == "date":
            got = mail.date
            assert (got.isoformat() if got else None) == want
            assert got is None or datetime.fromisoformat(want) == got
        elif key in FIELDS:
            assert getattr(mail, key) == want, key
        elif key == "text_startswith":
            assert mail.text.startswith(want), mail.text[:200]
        elif key == "text_contains":
            assert all(part in mail.text for part in want), mail.text
        elif key == "text_excludes":
            assert not any(part in mail.text for part in want), mail.text
        elif key == "html_contains":
            assert mail.html is not None
            assert all(part in mail.html for part in want), mail.html
        elif key == "defects_include":
            for part in want:
                assert any(part in d for d in mail.defects), (part, mail.defects)
        elif key == "attachment_types":
            assert [a.content_type for a in mail.attachments] == want
        elif key == "delivery_report":
            report = read_report(eml.read_bytes())
            found = [
                {**dataclasses.asdict(r), "failed": r.failed, "permanent": r.permanent}
                for r in report.recipients
            ]
            assert found == want["recipients"]
            assert report.original_ids == want["original_ids"]
            assert report.original_subject == want["original_subject"]
        else:
            pytest.fail(f"unknown expectation {key!r} in {eml.stem}.json")


def test_parsed_mail_is_frozen() -> None:
    mail = parse_mail((CORPUS / "01_plain_ascii.eml").read_bytes())
    with pytest.raises(dataclasses.FrozenInstanceError):
        mail.subject = "x"  # type: ignore[misc]
    assert isinstance(AttachmentInfo(None, "a/b", 0, None, False), AttachmentInfo)


# -- dedup ------------------------------------------------------------------------------

IMAP_TRACE = (
    b"Return-Path: <maria.lopez@example.net>\n"
    b"Delivered-To: support@helpline.test\n"
    b"X-Original-To: support@helpline.test\n"
    b"Received: from mail.helpline.test by imap.helpline.test (Dovecot) with LMTP\n"
    b"\tid 9f2b; Tue, 04 Jun 2024 09:12:45 +0000\n"
    b"Authentication-Results: imap.helpline.test;\n"
    b"  dkim=pass header.d=example.net;\n"
    b"  spf=pass smtp.mailfrom=example.net\n"
    b"ARC-Seal: i=1; a=rsa-sha256; t=1717492365; cv=none; d=helpline.test; s=arc;\n"
    b"  b=AbCdEf==\n"
    b"received-spf: Pass (mailfrom) identity=mailfrom\n"
    b"X-Spam-Status: No, score=-0.1 required=5.0\n"
    b"  tests=DKIM_SIGNED,DKIM_VALID\n"
    b"X-Spam-Flag: NO\n"
    b"X-Virus-Scanned: clamav at imap.helpline.test\n"
)


def _imap_copy(smtp_raw: bytes) -> bytes:
    """The copy an IMAP server would return: other trace fields on top, LF endings,
    its own trailing newlines."""
    return IMAP_TRACE + smtp_raw.replace(b"\r\n", b"\n") + b"\n\n"


@pytest.mark.parametrize("eml", CASES, ids=[p.stem for p in CASES])
def test_smtp_and_imap_copies_have_one_digest(eml: Path) -> None:
    smtp_raw = eml.read_bytes()
    smtp_raw = smtp_raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # SMTP: CRLF
    imap_raw = _imap_copy(smtp_raw)
    assert imap_raw != smtp_raw
    assert content_digest(imap_raw) == content_digest(smtp_raw)
    assert message_id_of(imap_raw) == message_id_of(smtp_raw)
    assert dedup_key(imap_raw, message_id_of(imap_raw)) == dedup_key(
        smtp_raw, message_id_of(smtp_raw)
    )


def test_the_digest_keeps_what_is_not_trace() -> None:
    raw = (CORPUS / "01_plain_ascii.eml").read_bytes()
    other_subject = raw.replace(b"Subject: Order 4471", b"Subject: Order 4472")
    other_body = raw.replace(b"a kettle", b"a toaster")
    extra_field = raw.replace(b"MIME-Version", b"X-Mailer: x\r\nMIME-Version")
    digests = {content_digest(r) for r in (raw, other_subject, other_body, extra_field)}
    assert len(digests) == 4
    # A body that starts like a trace field is still body.
    body_received = raw + b"\r\nReceived: not a header here\r\n"
    assert content_digest(body_received) != content_digest(raw)


def test_the_same_message_id_with_another_body_is_another_key() -> None:
    raw = (CORPUS / "01_plain_ascii.eml").read_bytes()
    changed = raw.replace(b"two weeks ago", b"three weeks ago")
    mid = message_id_of(raw)
    assert mid == message_id_of(changed) == "CAF3k9q+7x@mail.example.net"
    key, other = dedup_key(raw, mid), dedup_key(changed, mid)
    assert key.startswith(f"mid:{mid}:") and other.startswith(f"mid:{mid}:")
    assert key != other


def test_a_mail_without_message_id_gets_a_stable_synthetic_key() -> None:
    raw = (CORPUS / "16_no_message_id_no_date.eml").read_bytes()
    assert message_id_of(raw) is None
    key = dedup_key(raw, None)
    assert key == f"synthetic:{content_digest(raw)}"
    assert key == dedup_key(bytes(raw), message_id_of(raw))
    assert key == dedup_key(_imap_copy(raw.replace(b"\n", b"\r\n")), None)
    assert dedup_key(raw + b"P.S. one more thing\n", None) != key
    assert dedup_key(raw, "  <>  ") == key


@pytest.mark.parametrize(
    ("header", "want"),
    [
        (b"Message-ID: <Abc.DEF@Example.com>", "Abc.DEF@Example.com"),
        (b"message-id:   <x@y>   ", "x@y"),
        (b"Message-Id:\r\n <folded@example.org>", "folded@example.org"),
        (b"Message-ID: no-brackets@example.org", "no-brackets@example.org"),
        (b"Message-ID: (comment) <c@d>", "c@d"),
        (b"Message-ID: <>", None),
        (b"X-Message-ID: <not-this@x>", None),
    ],
)
def test_message_id_of(header: bytes, want: str | None) -> None:
    raw = b"From: a@b\r\n" + header + b"\r\nSubject: s\r\n\r\nMessage-ID: <in-body@x>\r\n"
    assert message_id_of(raw) == want
    assert message_id_of(raw.replace(b"\r\n", b"\n")) == want


def test_normalize_msgid() -> None:
    assert normalize_msgid("  <Case.Kept@Host>  ") == "Case.Kept@Host"
    assert normalize_msgid("Case.Kept@Host") == "Case.Kept@Host"
    assert normalize_msgid("") is None
    assert normalize_msgid(None) is None


# -- never raising ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_parse_mail_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    mail = parse_mail(raw)
    assert isinstance(mail, ParsedMail)
    assert mail == parse_mail(raw, reference=True)
    _headers_read_alike(raw, mail)
    _readable(mail)
    content_digest(raw)
    message_id_of(raw)


MIME_SHARDS = [
    b"\r\n",
    b"\n\n",
    b"--",
    b"Content-Type: multipart/mixed; boundary=",
    b"Content-Transfer-Encoding: base64\n",
    b"=?utf-8?B?",
    b"?=",
    b"charset=",
    b"\xff\xfe",
    b"\x00",
    b"=\n",
    b"<",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(CASES),
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=20),
    st.lists(st.tuples(st.floats(0, 1), st.sampled_from(MIME_SHARDS)), max_size=5),
    st.floats(0, 1),
)
def test_parse_mail_never_raises_on_mutated_corpus(
    eml: Path,
    flips: list[tuple[float, int]],
    inserts: list[tuple[float, bytes]],
    keep: float,
) -> None:
    data = bytearray(eml.read_bytes())
    for where, byte in flips:
        data[int(where * (len(data) - 1))] = byte
    for where, shard in inserts:
        at = int(where * len(data))
        data[at:at] = shard
    raw = bytes(data[: max(1, int(keep * len(data) * 1.2))])
    mail = parse_mail(raw)
    assert isinstance(mail, ParsedMail)
    assert mail == parse_mail(raw, reference=True)
    _headers_read_alike(raw, mail)
    assert all("@" in r.address for r in read_report(raw).recipients)
    _readable(mail)
    content_digest(raw)


def test_a_utf8_delivery_report_is_read_too() -> None:
    """RFC 6533: an internationalized address comes in message/global-delivery-status,
    which the email package leaves as text; the blocks are read from it."""
    raw = (
        "From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=global-delivery-status; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n"
        "--b\r\nContent-Type: message/global-delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        "Final-Recipient: utf-8; jörg@bücher.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "\r\n--b\r\nContent-Type: message/global-headers\r\n\r\n"
        "Message-ID: <evt_1@helpline.test>\r\nSubject: Re: Bestellung [#HL-9]\r\n"
        "\r\n--b--\r\n"
    ).encode()
    report = read_report(raw)
    assert [(r.address, r.status, r.permanent) for r in report.recipients] == [
        ("jörg@bücher.example", "5.1.1", True)
    ]
    assert report.original_ids == ["evt_1@helpline.test"]
    assert report.original_subject == "Re: Bestellung [#HL-9]"


# -- the structure parsed with compat32 reads as policy.default -------------------------


def _paths(raw: bytes) -> list[str]:
    """The policies parse_mail parsed the structure with, in order."""
    seen: list[str] = []
    real = parse._structure

    def spy(raw: bytes, policy: Any, defects: list[str]) -> Any:
        seen.append("compat32" if policy is email.policy.compat32 else "default")
        return real(raw, policy, defects)

    parse._structure = spy  # type: ignore[assignment]
    try:
        parse_mail(raw)
    finally:
        parse._structure = real  # type: ignore[assignment]
    return seen


def _outcome(check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except Exception as err:
        return type(err)


def _headers_read_alike(raw: bytes, mail: ParsedMail) -> None:
    """The header fields parse_with_headers hands the loop and DMARC checks (from the MIME
    parse when it can) give them the same answers as the header block parsed alone."""
    parsed, shared = parse_with_headers(raw)
    assert parsed == mail
    alone = header_fields(raw)
    own = RecipientPolicy(["support@example.com", "@helpline.test"])
    for sender in (None, "", "ann@example.org"):
        assert _outcome(classify, shared, mail, sender, own) == _outcome(
            classify, alone, mail, sender, own
        )
    trusted = frozenset({"mx.example.com", "mx.helpline.test", "imap.helpline.test"})
    for claimed in (mail.from_email, "ann@customer.example"):
        assert _outcome(dmarc_verdict, shared, claimed, trusted) == _outcome(
            dmarc_verdict, alone, claimed, trusted
        )
    # The same fields in the same order; values alike but for how folds end (CRLF or LF).
    assert [(k, " ".join(str(v).split())) for k, v in shared.items()] == [
        (k, " ".join(str(v).split())) for k, v in alone.items()
    ]


@pytest.mark.parametrize("eml", CASES, ids=[p.stem for p in CASES])
def test_the_parse_equals_the_policy_default_parse(eml: Path) -> None:
    raw = eml.read_bytes()
    assert parse_mail(raw) == parse_mail(raw, reference=True)
    _headers_read_alike(raw, parse_mail(raw))
    assert parse_mail(raw.replace(b"\n", b"\r\n")) == parse_mail(
        raw.replace(b"\n", b"\r\n"), reference=True
    )
    # Every corpus mail takes the cheap path (a leaf with an encoded-word or RFC 2231
    # file name, as the PDF mail has, is read through policy.default within it).
    assert _paths(raw) == ["compat32"]


ODD_MIME = [
    # Each needs policy.default for the whole mail (a container) or for one leaf.
    b'Content-Type: multipart/mixed; boundary="b" (comment)',
    b"Content-Type: multipart/mixed; boundary*=utf-8''b",
    b"Content-Type: multipart/mixed; boundary=b; boundary=c",
    b'Content-Type: multipart/mixed;\r\n boundary="b"',
    b"Content-Type: multipart/mixed; boundary==?utf-8?q?b?=",
    b'Content-Type: multipart/mixed; boundary="\\b"',
    b"Content-Type: multipart/mixed; boundary=b;",
    b"Content-Type: Multipart/Mixed ; boundary = b",
    b"Content-Type: multipart/mixed; boundary=\xc3\xa4",
    b"Content-Transfer-Encoding: base64 (x)",
]


@pytest.mark.parametrize("field", ODD_MIME)
def test_odd_mime_fields_read_as_policy_default(field: bytes) -> None:
    leaf = (
        b'Content-Type: application/pdf; name="=?utf-8?q?r=C3=A9sum=C3=A9.pdf?="\r\n'
        b"Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    )
    raw = (
        b"From: Ann <ann@example.org>\r\nSubject: odd\r\nMIME-Version: 1.0\r\n"
        + field
        + b"\r\n\r\npreamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
        + leaf
        + b"--b--\r\n"
    )
    assert parse_mail(raw) == parse_mail(raw, reference=True)


_TOKEN = st.text("abcXYZ019-._+!#", min_size=1, max_size=8)
_PIECE = st.sampled_from(
    [" ", "\t", "\r\n ", "\n\t", ";", "=", '"', "(", ")", "\\", "*", "'", "%", "=?", "?=",
     "/", ",", "\u00e4", "<", ">", "@", ":"]
)  # fmt: skip
_VALUE = st.lists(st.one_of(_TOKEN, _PIECE), max_size=6).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["multipart/mixed", "multipart/alternative", "text/plain", "message/rfc822"]),
    st.lists(st.tuples(st.sampled_from(["charset", "name", "x", "CHARSET"]), _VALUE), max_size=3),
    st.sampled_from(["b", '"b"', "b;", '"b" ', "b (c)"]),
    st.tuples(_VALUE, _VALUE, _VALUE),
)
def test_generated_mime_fields_read_as_policy_default(
    ctype: str,
    params: list[tuple[str, str]],
    boundary: str,
    leaf: tuple[str, str, str],
) -> None:
    """Content-Type, Content-Disposition and Content-Transfer-Encoding values near what is
    plain, on the container and on a leaf: the parse is always the policy.default one."""
    fields = "".join(f"; {name}={value}" for name, value in params)
    ltype, ldisp, lcte = leaf
    raw = (
        f"From: Ann <ann@example.org>\r\nContent-Type: {ctype}; boundary={boundary}{fields}\r\n"
        "\r\n--b\r\n"
        f"Content-Type: text/plain; charset={ltype}\r\n"
        f"Content-Disposition: attachment; filename={ldisp}\r\n"
        f"Content-Transfer-Encoding: {lcte or 'base64'}\r\n\r\naGVsbG8=\r\n"
        "--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--b--\r\n"
    ).encode("utf-8", "surrogateescape")
    assert parse_mail(raw) == parse_mail(raw, reference=True)


_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_ATOM = st.text(_ATEXT, min_size=1, max_size=5)
_DOT_ATOM = st.lists(_ATOM, min_size=1, max_size=3).map(".".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(_ATOM, st.sampled_from([" ", "  ", "\t", ".", '"', "=?", ","])), max_size=5),
    _DOT_ATOM,
    _DOT_ATOM,
    st.sampled_from(["{name} <{spec}>", "{name}<{spec}>", "<{spec}>", "{spec}", "{name} {spec}"]),
)
def test_address_fields_read_as_policy_default(
    name: list[str], local: str, domain: str, form: str
) -> None:
    """The plain forms read without the header factory, everything else with it: the same."""
    value = form.format(name="".join(name), spec=f"{local}@{domain}")
    raw = f"From: {value}\r\nTo: {value}, x@y.z\r\nReply-To: {value}\r\n\r\nbody\r\n".encode()
    assert parse_mail(raw) == parse_mail(raw, reference=True)


def test_8bit_mime_fields_do_not_break_the_checks() -> None:
    """A Content-Type with 8-bit bytes is a Header object in compat32, not a str."""
    raw = b"From: a@b.example\r\nContent-Type: multipart/report; x=\xe4\r\n\r\nhi\r\n"
    mail, headers = parse_with_headers(raw)
    found = classify(headers, mail, "a@b.example", RecipientPolicy(["x@y.example"]))
    assert found is not None and found.kind == "bounce"
