"""Defensive reading of received mail: parse anything, never raise.

Received mail is often broken: wrong or unknown charsets, bad transfer encodings, missing
boundaries, binary garbage, absurd nesting. Everything here tolerates it and says what it
found instead of raising. The standard parser (``compat32`` policy: the fastest, and what
``flufl.bounce`` expects) is used as it is; walking is iterative with a depth limit.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from email import message_from_bytes
from email.header import decode_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parseaddr

#: Parts nested deeper than this are not looked into.
MAX_DEPTH = 24
#: Parts visited at most, whatever the shape of the message.
MAX_PARTS = 500
#: Characters of one text part that are kept for classification.
MAX_TEXT = 200_000

_HEADER_LINE = re.compile(rb"^[!-9;-~]{1,76}:", re.MULTILINE)
_WS = re.compile(r"\s+")


def parse(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=compat32)


def looks_like_mail(raw: bytes) -> bool:
    """Whether ``raw`` starts with something like a header block (after a mbox From_ line)."""
    head = raw.lstrip()[:4096]
    if head.startswith(b"From "):
        head = head.partition(b"\n")[2]
    return bool(_HEADER_LINE.match(head))


def header_text(msg: Message, name: str) -> str:
    """A header decoded to text (RFC 2047 words, unknown charsets replaced), one line."""
    try:
        value = msg.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    return decode_words(value)


def decode_words(value: object) -> str:
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:
            return ""
    if "=?" not in value:
        return _WS.sub(" ", value).strip()
    try:
        chunks = decode_header(value)
    except Exception:
        return _WS.sub(" ", value).strip()
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset))
        else:
            out.append(chunk)
    return _WS.sub(" ", "".join(out)).strip()


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text with the declared charset, else UTF-8, else Latin-1; never raises."""
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            codecs.lookup(candidate)
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
        except Exception:  # noqa: S112  (broken mail: skip this header or part)
            continue
    return data.decode("latin-1")


def addresses(msg: Message, *names: str) -> list[str]:
    """Email addresses in the named headers, lower-cased, in order, without duplicates."""
    found: list[str] = []
    for name in names:
        try:
            values = msg.get_all(name) or []
        except Exception:  # noqa: S112  (broken mail: skip this header or part)
            continue
        try:
            pairs = getaddresses([decode_words(v) for v in values])
        except Exception:  # noqa: S112  (broken mail: skip this header or part)
            continue
        for _name, addr in pairs:
            addr = addr.strip().strip("<>").lower()
            if "@" in addr and addr not in found:
                found.append(addr)
    return found


def sender_address(msg: Message) -> str:
    try:
        _name, addr = parseaddr(header_text(msg, "From"))
    except Exception:
        return ""
    return addr.strip().lower()


def walk(msg: Message, *, into_messages: bool = True) -> Iterator[tuple[Message, int]]:
    """Every part (depth first, in order) with its depth; bounded in depth and count.
    ``into_messages=False``: do not look inside enclosed (message/rfc822) messages."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part, depth
        if depth >= MAX_DEPTH:
            continue
        if not into_messages and depth > 0 and content_type(part) == "message/rfc822":
            continue
        try:
            payload = part.get_payload() if part.is_multipart() else None
        except Exception:
            payload = None
        if isinstance(payload, list):
            children = [p for p in payload if isinstance(p, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def is_attachment(part: Message) -> bool:
    try:
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    except Exception:
        return False
    return disposition == "attachment"


def broken_multipart(part: Message) -> bool:
    """A multipart whose boundary is missing or wrong: the parser leaves its body as text."""
    try:
        return part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), str)
    except Exception:
        return False


def part_text(part: Message, limit: int = MAX_TEXT) -> str:
    """The decoded text of a leaf part (transfer encoding and charset), at most ``limit``."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if data is None:
        try:
            payload = part.get_payload()
        except Exception:
            return ""
        if isinstance(payload, str):
            return payload[:limit]
        return ""
    if not isinstance(data, bytes):
        return str(data)[:limit]
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(data[: limit * 2], charset)[:limit]


def raw_part_text(part: Message) -> str:
    """A message/* part (delivery-status, feedback-report, rfc822-headers) as text,
    whether the parser made sub-messages of it or left it as a string."""
    try:
        payload = part.get_payload()
    except Exception:
        return ""
    if isinstance(payload, list):
        blocks: list[str] = []
        for block in payload:
            if isinstance(block, Message):
                try:
                    blocks.append("\n".join(f"{k}: {v}" for k, v in block.items()))
                except Exception:  # noqa: S112  (broken mail: skip this header or part)
                    continue
        return "\n\n".join(blocks)
    if isinstance(payload, str):
        encoding = (part.get("Content-Transfer-Encoding") or "").strip().lower()
        if encoding in ("base64", "quoted-printable"):
            return part_text(part)
        return payload[:MAX_TEXT]
    return ""


def enclosed_messages(msg: Message) -> list[Message]:
    """Messages carried inside (message/rfc822 parts, text/rfc822-headers parsed)."""
    found: list[Message] = []
    for part, _depth in walk(msg):
        ctype = content_type(part)
        if ctype == "message/rfc822":
            try:
                payload = part.get_payload()
            except Exception:  # noqa: S112  (broken mail: skip this header or part)
                continue
            if isinstance(payload, list):
                found.extend(p for p in payload[:1] if isinstance(p, Message))
            elif isinstance(payload, str):
                found.append(parse(payload.encode("utf-8", "replace")))
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            text = part_text(part) if ctype.startswith("text/") else raw_part_text(part)
            found.append(parse(text.encode("utf-8", "replace")))
    return found


def parse_fields(text: str) -> list[dict[str, str]]:
    """RFC 822-style field blocks (a delivery-status or feedback-report body): one dict
    per block separated by blank lines, lower-case names, continuation lines joined.
    A name seen twice in one block keeps both values, joined with a newline."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t" and last is not None:
            current[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name.strip():
            last = None
            continue
        key = name.strip().lower()
        value = value.strip()
        current[key] = f"{current[key]}\n{value}" if key in current else value
        last = key
    if current:
        blocks.append(current)
    return blocks
