"""Message assembly: quoted-printable by pieces, the per-process boundary, base32 tokens."""

from __future__ import annotations

import base64
import quopri
from email import message_from_bytes, policy

from hypothesis import given, settings
from hypothesis import strategies as st

from app.delivery.message import OutgoingMessage, QpEncoder, format_address
from app.recipients.tokens import b32_lower

_TEXT = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_TEXT, max_size=10), static=st.sets(st.integers(0, 9)))
def test_qp_pieces_decode_to_the_joined_text(pieces: list[str], static: set[int]) -> None:
    encoder = QpEncoder(p for i, p in enumerate(pieces) if i in static)
    for _ in range(2):  # the second time from the cache
        encoded = encoder.encode(pieces)
        assert b"\n" not in encoded.replace(b"\r\n", b"")
        assert all(len(line) <= 78 for line in encoded.split(b"\r\n"))  # b2a_qp's own limit
        decoded = quopri.decodestring(encoded.replace(b"\r\n", b"\n")).decode("utf-8")
        assert decoded == "".join(pieces)


@settings(max_examples=100, deadline=None)
@given(html=st.lists(_TEXT, max_size=6), text=st.lists(_TEXT, max_size=6))
def test_messages_from_pieces_parse_back(html: list[str], text: list[str]) -> None:
    message = OutgoingMessage(
        mail_from="b@example.com",
        rcpt_to="ann@example.org",
        from_header=format_address("News", "news@example.com"),
        to_header=format_address("Ann", "ann@example.org"),
        subject="Hello",
        html="",
        text="",
        html_qp=QpEncoder(html[:2]).encode(html),
        text_qp=QpEncoder(text[:2]).encode(text),
        message_id="<x@example.com>",
    )
    parsed = message_from_bytes(message.to_bytes(), policy=policy.default)
    plain, rich = (part.get_payload(decode=True).decode() for part in parsed.iter_parts())  # type: ignore[union-attr]
    assert plain.replace("\r\n", "\n") == "".join(text).replace("\r\n", "\n")
    assert rich.replace("\r\n", "\n") == "".join(html).replace("\r\n", "\n")


@given(st.binary(max_size=80))
def test_b32_lower_is_base32(blob: bytes) -> None:
    assert b32_lower(blob) == base64.b32encode(blob).rstrip(b"=").decode().lower()


@settings(max_examples=200, deadline=None)
@given(
    subject=st.text(min_size=1, max_size=80),
    name=st.text(max_size=40),
    html=st.lists(st.text(max_size=200), max_size=5),
    text=st.text(max_size=500),
)
def test_assembled_messages_have_crlf_line_ends_only(
    subject: str, name: str, html: list[str], text: str
) -> None:
    """What ``to_bytes`` makes is sent with ``Envelope(crlf=True)``: dot-stuffing then
    skips looking for bare CR and LF, so there must be none."""
    from app.delivery.transport import _dot_stuff

    data = OutgoingMessage(
        mail_from="b@example.com",
        rcpt_to="ann@example.org",
        from_header=format_address(name or None, "news@example.com"),
        to_header=format_address(name or None, "ann@example.org"),
        subject=subject,
        html="",
        text=text,
        html_qp=QpEncoder(html[:1]).encode(html),
        message_id="<x@example.com>",
        list_unsubscribe="<https://example.com/u/t>",
        one_click=True,
    ).to_bytes()
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
    assert _dot_stuff(data, crlf=True) == _dot_stuff(data)
