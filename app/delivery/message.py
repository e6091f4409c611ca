"""Outgoing messages, assembled as bytes.

The standard ``email`` package costs ~1.8 ms a message; campaigns send millions, so a
message is assembled here from already-rendered parts: a fixed header order, RFC 2047
encoded words where a value is not ASCII, quoted-printable bodies (``binascii``, in C),
multipart/alternative. Every header value passes through :func:`header_value`, so no
rendered text can start a new header line."""

from __future__ import annotations

import binascii
import itertools
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr, formatdate

from app.delivery.dkim import SIGNED_HEADERS, DkimSigner, body_hash, relaxed_value

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")

#: MIME boundaries must not occur in the content, not be secret: a random per-process
#: prefix and a counter are unique and cost nothing (os.urandom per message does).
_BOUNDARY_PREFIX = "=_lw_" + secrets.token_hex(8) + f"_{os.getpid():x}_"
_BOUNDARY_COUNTER = itertools.count()


def unique_token() -> str:
    """Unique within this process and, by its random prefix, across processes."""
    return f"{_BOUNDARY_PREFIX}{next(_BOUNDARY_COUNTER):x}"


#: The MIME boundary of every message of this process. It need not differ between
#: messages: it only must not occur in the parts, and quoted-printable text never contains
#: ``=_`` (a literal ``=`` is always encoded as ``=3D``; a soft break is ``=`` + CRLF).
BOUNDARY = _BOUNDARY_PREFIX + "b"

_date_cache: tuple[int, str] = (0, "")


def message_date() -> str:
    """The Date header value, formatted once per second."""
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = _date_cache = (now, formatdate(now, usegmt=True))
    return cached[1]


class HeaderInjection(ValueError):
    """A header value tried to carry a line break or control character."""


def header_value(value: str) -> str:
    """One line, no control characters (CR/LF above all)."""
    return _CONTROL.sub(" ", value).strip()


def encode_text_header(value: str) -> str:
    value = header_value(value)
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")


def ascii_address(address: str) -> str:
    """The address with an IDNA (ASCII) domain; the local part is kept as it is."""
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}"


#: An address and a display name that every step of ``_format_address`` leaves as they
#: are (no control character, space or quote; an ASCII domain; no RFC 5322 special in the
#: name, single spaces between its words): most contacts.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def format_address(name: str | None, address: str) -> str:
    """A From or To header value: the address, with the display name quoted or encoded as
    it needs (raises ``HeaderInjection`` for an address that could break out of it)."""
    if _PLAIN_ADDRESS.fullmatch(address) and (not name or _PLAIN_NAME.fullmatch(name)):
        return f"{name} <{address}>" if name else address
    return _format_address(name, address)


def _format_address(name: str | None, address: str) -> str:
    address = header_value(address)
    if any(c in address for c in '<>,;"\\ '):
        raise HeaderInjection(f"refusing a suspicious address {address!r}")
    address = ascii_address(address)
    if not name:
        return f"<{address}>" if not address.isascii() else address
    name = header_value(name)
    if not address.isascii():  # SMTPUTF8: the header may carry UTF-8 as it is
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>'
    return formataddr((name, address), charset="utf-8")


def _qp(text: str) -> bytes:
    if "\r" in text:  # every line end becomes CRLF, a bare CR too (as SMTP would make it)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    return data.replace(b"\n", b"\r\n")


#: A piece that quoted-printable leaves as it is: printable ASCII but ``=``, short enough
#: to share a line with the soft line break that follows it.
_QP_PLAIN = re.compile(r"[\x20-\x3c\x3e-\x7e]{0,75}")
_QP_MAX_LINE = 76


def _qp_piece(text: str) -> bytes:
    """Quoted-printable for one piece of a body that is followed by a soft line break: its
    last line leaves room for the ``=``."""
    if _QP_PLAIN.fullmatch(text):
        return text.encode("ascii")
    data = _qp(text)
    start = data.rfind(b"\n") + 1
    if len(data) - start >= _QP_MAX_LINE:  # break the last line so that "=" still fits
        cut = start + _QP_MAX_LINE - 4
        while data[cut - 1 : cut] == b"=" or data[cut - 2 : cut - 1] == b"=":  # not inside "=XX"
            cut -= 1
        data = data[:cut] + b"=\r\n" + data[cut:]
    return data


_QP_CACHE_VALUES = 4096


class QpEncoder:
    """Quoted-printable for a body rendered as pieces (template text and values).

    Pieces are encoded one by one and joined by soft line breaks (``=`` CRLF, which a
    decoder removes), so the encoding of the pieces that are the same in every message
    (``static``: the template's literal text and the layout) is computed once and kept.
    Decoding the result gives the concatenation of the pieces."""

    __slots__ = ("cache", "static")

    #: Joins the encoded pieces (``=`` CRLF: a decoder removes it).
    SOFT_BREAK = b"=\r\n"

    def __init__(self, static: Iterable[str]) -> None:
        self.static = frozenset(static)
        self.cache: dict[str, bytes] = {}

    def encode(self, pieces: Iterable[str]) -> bytes:
        return self.join([self.piece(piece) for piece in pieces if piece])

    def piece(self, piece: str) -> bytes:
        """One non-empty piece, encoded to be followed by a soft line break."""
        encoded = self.cache.get(piece)
        if encoded is None:
            encoded = _qp_piece(piece)
            # literal text always; short values too (``you``, a city) while there is room
            if piece in self.static or (len(piece) <= 40 and len(self.cache) < _QP_CACHE_VALUES):
                self.cache[piece] = encoded
        return encoded

    @staticmethod
    def join(encoded: list[bytes]) -> bytes:
        """The part from its encoded pieces (or runs of them joined by :meth:`join_run`)."""
        if not encoded:
            return b""
        last = encoded[-1]
        if last[-1:] in (b" ", b"\t"):  # trailing white space at the end of the part
            encoded[-1] = last + b"="
        return _SOFT_BREAK.join(encoded)

    @staticmethod
    def join_run(encoded: list[bytes]) -> bytes:
        """Encoded pieces joined as :meth:`join` joins them, to be joined again with others
        (the result is the same as joining all the pieces at once)."""
        return _SOFT_BREAK.join(encoded)


_SOFT_BREAK = b"=\r\n"


@dataclass(slots=True)
class OutgoingMessage:
    """Envelope and headers of one message. ``to_bytes`` assembles it."""

    mail_from: str  # envelope sender (VERP Return-Path)
    rcpt_to: str
    from_header: str
    to_header: str
    subject: str
    html: str
    text: str
    message_id: str
    date: str = field(default_factory=message_date)
    reply_to: str | None = None
    list_unsubscribe: str | None = None
    one_click: bool = False
    list_id: str | None = None
    feedback_id: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    #: Already quoted-printable encoded bodies (``QpEncoder``); they win over text/html.
    text_qp: bytes | None = None
    html_qp: bytes | None = None

    @property
    def needs_smtputf8(self) -> bool:
        return not (self.rcpt_to.isascii() and self.mail_from.isascii() and self.to_header.isascii())

    def header_fields(self) -> list[tuple[str, str]]:
        """(name, value) of every header but Content-Type, in order; values are one line
        (an encoded Subject may be folded)."""
        fields = [
            ("From", self.from_header),
            ("To", self.to_header),
            ("Subject", encode_text_header(self.subject)),
            ("Date", self.date),
            ("Message-ID", self.message_id),
        ]
        if self.reply_to:
            fields.append(("Reply-To", self.reply_to))
        if self.list_unsubscribe:
            fields.append(("List-Unsubscribe", header_value(self.list_unsubscribe)))
            if self.one_click:
                fields.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        if self.list_id:
            fields.append(("List-Id", header_value(self.list_id)))
        if self.feedback_id:
            fields.append(("Feedback-ID", header_value(self.feedback_id)))
        for name, value in self.extra_headers:
            if not _HEADER_NAME.fullmatch(name):
                raise HeaderInjection(f"invalid header name {name!r}")
            fields.append((name, header_value(value)))
        fields.append(("MIME-Version", "1.0"))
        return fields

    def header_lines(self) -> list[str]:
        return [f"{name}: {value}" for name, value in self.header_fields()]

    def to_bytes(self, signer: DkimSigner | None = None, *, timestamp: int | None = None) -> bytes:
        """The message; with ``signer``, DKIM-signed from its parts (no re-parsing)."""
        fields = self.header_fields()
        fields.append(("Content-Type", _CONTENT_TYPE))
        text = self.text_qp if self.text_qp is not None else _qp(self.text)
        html = self.html_qp if self.html_qp is not None else _qp(self.html)
        body = b"".join([_PREAMBLE, text, _BETWEEN, html, _EPILOGUE])
        head = "\r\n".join([f"{name}: {value}" for name, value in fields]).encode("utf-8")
        if signer is not None:
            head = signer.signature_header(fields, body, timestamp=timestamp) + head
        return b"".join([head, b"\r\n\r\n", body])


class CampaignAssembler:
    """Campaign messages, byte for byte as :meth:`OutgoingMessage.to_bytes` makes them
    (with a Reply-To, a one-click List-Unsubscribe, a List-Id and a Feedback-ID, no extra
    headers), with what every message of a campaign shares prepared once: the constant
    header lines and their DKIM canonical form. Per message it writes six header values
    and the body, and signs (~2 µs of Python besides the hashes and the signature, where
    the general path spends ~40 µs)."""

    __slots__ = ("_canonical_from", "_canonical_tail", "_from", "_names", "_tail", "signer")

    def __init__(
        self, *, from_header: str, list_id: str, feedback_id: str, signer: DkimSigner | None
    ) -> None:
        if not (list_id and feedback_id):
            raise ValueError("campaign messages have a List-Id and a Feedback-ID")
        list_id, feedback_id = header_value(list_id), header_value(feedback_id)
        self.signer = signer
        self._from = f"From: {from_header}\r\nTo: "
        tail = [
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("List-Id", list_id),
            ("Feedback-ID", feedback_id),
            ("MIME-Version", "1.0"),
            ("Content-Type", _CONTENT_TYPE),
        ]
        self._tail = "".join([f"\r\n{name}: {value}" for name, value in tail]) + "\r\n\r\n"
        self._canonical_from = f"from:{relaxed_value(from_header)}\r\nto:"
        signed_tail = [(name.lower(), value) for name, value in tail if name.lower() in SIGNED_HEADERS]
        self._canonical_tail = "".join([f"{name}:{relaxed_value(value)}\r\n" for name, value in signed_tail])
        names = ["from", "to", "subject", "date", "message-id", "reply-to", "list-unsubscribe"]
        names += [name for name, _ in signed_tail]
        assert tuple(names) == SIGNED_HEADERS  # the order of OutgoingMessage.header_fields
        self._names = ":".join(names)

    def to_bytes(
        self,
        *,
        to_header: str,
        subject: str,
        message_id: str,
        reply_to: str,
        list_unsubscribe: str,
        text_qp: bytes,
        html_qp: bytes,
        canonical_body: bool = False,
        date: str | None = None,
        timestamp: int | None = None,
    ) -> bytes:
        """The message. ``canonical_body``: the caller knows both bodies hold no tab, no
        two spaces in a row and no space before a line end (``EncodedMessage.canonical``),
        so the body is in DKIM relaxed form as it is."""
        subject = encode_text_header(subject)
        date = date or message_date()
        list_unsubscribe = header_value(list_unsubscribe)
        body = b"".join([_PREAMBLE, text_qp, _BETWEEN, html_qp, _EPILOGUE])
        head = (
            f"{self._from}{to_header}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: {message_id}"
            f"\r\nReply-To: {reply_to}\r\nList-Unsubscribe: {list_unsubscribe}{self._tail}"
        ).encode()
        signer = self.signer
        if signer is None:
            return head + body
        canonical = (
            f"{self._canonical_from}{relaxed_value(to_header)}\r\nsubject:{relaxed_value(subject)}"
            f"\r\ndate:{relaxed_value(date)}\r\nmessage-id:{relaxed_value(message_id)}"
            f"\r\nreply-to:{relaxed_value(reply_to)}\r\nlist-unsubscribe:{relaxed_value(list_unsubscribe)}"
            f"\r\n{self._canonical_tail}"
        )
        signature = signer.signature_of(
            self._names, canonical, body_hash(body, canonical=canonical_body), timestamp=timestamp
        )
        return b"".join([signature, head, body])


_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,60}")
_CONTENT_TYPE = f'multipart/alternative; boundary="{BOUNDARY}"'
_PART = "Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
_PREAMBLE = (
    f"This is a multi-part message in MIME format.\r\n--{BOUNDARY}\r\n{_PART.format(kind='plain')}"
).encode()
_BETWEEN = f"\r\n--{BOUNDARY}\r\n{_PART.format(kind='html')}".encode()
_EPILOGUE = f"\r\n--{BOUNDARY}--\r\n".encode()
