"""Message assembly: quoted-printable by pieces, the per-process boundary, base32 tokens."""

from __future__ import annotations

import base64
import quopri
from email import message_from_bytes, policy

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from app.delivery.dkim import DkimSigner
from app.delivery.message import CampaignAssembler, OutgoingMessage, QpEncoder, format_address
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


@given(st.binary(max_size=80) | st.binary(min_size=35, max_size=35))  # 35: a sealed token's size
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


_HEADER_TEXT = st.text(max_size=60)
_KEY = ed25519.Ed25519PrivateKey.generate()
_SIGNER = DkimSigner(selector="s1", domain="example.com", key=_KEY)
_DNS_RECORD = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(
    _KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
)


@settings(max_examples=200, deadline=None)
@given(
    sender=st.text(max_size=30),
    name=st.text(max_size=40),
    subject=st.text(min_size=1, max_size=80),
    list_id=st.text(min_size=1, max_size=60),
    feedback_id=st.text(min_size=1, max_size=60),
    list_unsubscribe=_HEADER_TEXT,
    html=st.lists(st.text(max_size=200), max_size=4),
    text=st.lists(st.text(max_size=200), max_size=4),
    signed=st.booleans(),
)
def test_campaign_assembler_makes_the_message_outgoing_message_makes(
    sender: str,
    name: str,
    subject: str,
    list_id: str,
    feedback_id: str,
    list_unsubscribe: str,
    html: list[str],
    text: list[str],
    signed: bool,
) -> None:
    """Campaign messages are assembled from prepared header lines: byte for byte what
    ``OutgoingMessage.to_bytes`` makes of the same values, signature included; whatever
    the values hold, no header line is added (``header_value`` runs on the same values)."""
    signer = _SIGNER if signed else None
    from_header = format_address(sender or None, "news@example.com")
    to_header = format_address(name or None, "ann@example.org")
    html_qp, text_qp = QpEncoder(()).encode(html), QpEncoder(()).encode(text)
    values = {
        "to_header": to_header,
        "subject": subject,
        "message_id": "<lw.7.abc@example.com>",
        "reply_to": "reply+xyz@example.com",
        "list_unsubscribe": list_unsubscribe or "<https://example.com/u/t>",
    }
    reference = OutgoingMessage(
        mail_from="b@example.com",
        rcpt_to="ann@example.org",
        from_header=from_header,
        html="",
        text="",
        html_qp=html_qp,
        text_qp=text_qp,
        date="Tue, 01 Dec 2026 08:00:00 GMT",
        one_click=True,
        list_id=list_id,
        feedback_id=feedback_id,
        **values,
    ).to_bytes(signer, timestamp=1_700_000_000)
    assembler = CampaignAssembler(
        from_header=from_header, list_id=list_id, feedback_id=feedback_id, signer=signer
    )
    ours = assembler.to_bytes(
        **values,
        text_qp=text_qp,
        html_qp=html_qp,
        date="Tue, 01 Dec 2026 08:00:00 GMT",
        timestamp=1_700_000_000,
    )
    assert ours == reference
    if signed:
        assert dkim.verify(ours, dnsfunc=lambda name, timeout=5: _DNS_RECORD)


def test_campaign_assembler_takes_the_bodys_word_for_its_relaxed_form() -> None:
    """``canonical_body`` skips canonicalising the body for its hash: said of a body in
    relaxed form it changes nothing (and said of another, the signature would not verify,
    which is why rendering says it only when it knows: ``EncodedMessage.canonical``)."""
    assembler = CampaignAssembler(
        from_header="news@example.com", list_id="l", feedback_id="f", signer=_SIGNER
    )
    values = {
        "to_header": "ann@example.org",
        "subject": "Hi",
        "message_id": "<x@example.com>",
        "reply_to": "r@example.com",
        "list_unsubscribe": "<https://example.com/u/t>",
        "date": "Tue, 01 Dec 2026 08:00:00 GMT",
        "timestamp": 1,
    }
    plain = {"text_qp": b"Hello Ann", "html_qp": b"<p>Hello Ann</p>"}
    assert assembler.to_bytes(**values, **plain, canonical_body=True) == assembler.to_bytes(**values, **plain)
    spaced = {"text_qp": b"Hello  Ann", "html_qp": b"<p>Hello Ann</p>"}
    wrong = assembler.to_bytes(**values, **spaced, canonical_body=True)
    assert wrong != assembler.to_bytes(**values, **spaced)


_NAMES = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.text(alphabet="Ab9 .-'\"\\,;:@<>()[]_!#~\t", max_size=20),
    st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]{0,20}", fullmatch=True),
)
_ADDRESSES = st.one_of(
    st.from_regex(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~ <>,;\"\\-]{1,12}@[A-Za-z0-9.ü -]{1,12}", fullmatch=True),
    st.text(max_size=30).map(lambda s: s + "@example.com"),
)


@settings(max_examples=500, deadline=None)
@given(name=_NAMES, address=_ADDRESSES)
def test_format_address_fast_path_is_the_general_one(name: str | None, address: str) -> None:
    """Plain names and addresses skip the general path: with the same result, and the
    same refusal of suspicious addresses."""
    from app.delivery.message import HeaderInjection, _format_address

    try:
        expected: str | type[Exception] = _format_address(name, address)
    except (HeaderInjection, UnicodeError) as exc:
        expected = type(exc)
    try:
        found: str | type[Exception] = format_address(name, address)
    except (HeaderInjection, UnicodeError) as exc:
        found = type(exc)
    assert found == expected
