"""DKIM: our RSA and Ed25519 signatures verify with dkimpy (the reference implementation),
over randomised messages too, cover the headers we promise, and break when tampered with."""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from app.delivery import dkim as lwdkim
from app.delivery.message import OutgoingMessage, format_address


def _message() -> bytes:
    return OutgoingMessage(
        mail_from="bounce+x@bounces.example.com",
        rcpt_to="ann@example.org",
        from_header=format_address("ACME Büro", "news@example.com"),
        to_header=format_address("Ann", "ann@example.org"),
        subject="Offers — this week",
        html="<p>Hello</p>" * 50,
        text="Hello\n" * 50,
        message_id="<lw.1.abc@example.com>",
        reply_to="reply+x@example.com",
        list_unsubscribe="<https://example.com/u/t>, <mailto:unsubscribe+x@example.com>",
        one_click=True,
        list_id='"Offers" <offers.example.com>',
    ).to_bytes()


def _key_files(tmp_path: Path, kind: str) -> tuple[Path, bytes]:
    if kind == "rsa":
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
        pub = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(pub)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(pub)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / f"{kind}.pem"
    path.write_bytes(pem)
    return path, record


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_signatures_verify_and_cover_the_unsubscribe_headers(tmp_path: Path, kind: str) -> None:
    path, record = _key_files(tmp_path, kind)
    signer = lwdkim.DkimSigner.from_file(path, selector="s1", domain="example.com")
    signed = signer.sign(_message())
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    header = signed.split(b"\r\n\r\n")[0].decode()
    h_tag = header.split(" h=", 1)[1].split(";", 1)[0].replace("\r\n", "").replace(" ", "").lower()
    for name in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post"):
        assert name in h_tag.split(":")
    tampered = signed.replace(b"Offers", b"Bargains", 1)
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: record)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@settings(max_examples=60, deadline=None)
@given(
    subject=st.text(min_size=1, max_size=120),
    name=st.text(max_size=60),
    html=st.text(max_size=3000),
    text=st.text(max_size=3000),
)
def test_random_messages_verify_with_dkimpy(kind: str, subject: str, name: str, html: str, text: str) -> None:
    signer, record = _SIGNERS[kind]
    message = OutgoingMessage(
        mail_from="b@example.com",
        rcpt_to="ann@example.org",
        from_header=format_address(name or None, "news@example.com"),
        to_header=format_address(name or None, "ann@example.org"),
        subject=subject,
        html=html,
        text=text,
        message_id="<x@example.com>",
        list_unsubscribe="<https://example.com/u/t>",
        one_click=True,
    ).to_bytes()
    assert dkim.verify(signer.sign(message), dnsfunc=lambda name, timeout=5: record)


def _make_signers() -> dict[str, tuple[lwdkim.DkimSigner, bytes]]:
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("rsa", "ed25519"):
            path, record = _key_files(Path(tmp), kind)
            out[kind] = (lwdkim.DkimSigner.from_file(path, selector="s1", domain="example.com"), record)
    return out


_SIGNERS = _make_signers()


def test_relaxed_canonicalisation_matches_dkimpy() -> None:
    from dkim.canonicalization import Relaxed

    body = b"a  b \t c \r\n\r\n x\t\r\n\r\n\r\n"
    assert lwdkim.relaxed_body(body) == Relaxed.canonicalize_body(body)
    headers = [(b"Subject", b" =?utf-8?q?a?=\r\n =?utf-8?q?b?=  "), (b"X-A", b"\tv  w ")]
    ours = b"".join(lwdkim.relaxed_header(n, v) for n, v in headers)
    theirs = b"".join(n + b":" + v for n, v in Relaxed.canonicalize_headers(headers))
    assert ours == theirs


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@settings(max_examples=60, deadline=None)
@given(
    subject=st.text(min_size=1, max_size=120),
    name=st.text(max_size=60),
    html=st.text(max_size=3000),
    text=st.text(max_size=3000),
)
def test_signature_from_parts_verifies_and_equals_signing_the_whole(
    kind: str, subject: str, name: str, html: str, text: str
) -> None:
    """``to_bytes(signer)`` signs from the header fields and the body, without parsing the
    message: dkimpy verifies it, and it is byte for byte what ``sign`` gives."""
    signer, record = _SIGNERS[kind]
    message = OutgoingMessage(
        mail_from="b@example.com",
        rcpt_to="ann@example.org",
        from_header=format_address(name or None, "news@example.com"),
        to_header=format_address(name or None, "ann@example.org"),
        subject=subject,
        html=html,
        text=text,
        message_id="<x@example.com>",
        reply_to="reply+x@example.com",
        list_unsubscribe="<https://example.com/u/t>, <mailto:unsubscribe+x@example.com>",
        one_click=True,
        list_id='"Offers" <offers.example.com>',
    )
    signed = message.to_bytes(signer, timestamp=1_700_000_000)
    assert signed == signer.sign(message.to_bytes(), timestamp=1_700_000_000)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    h_tag = signed.split(b" h=", 1)[1].split(b";", 1)[0].decode().lower().split(":")
    for header in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post"):
        assert header in h_tag


def test_relaxed_value_matches_dkimpy() -> None:
    from dkim.canonicalization import Relaxed

    for value in ["a", " a  b\t c ", "=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "x\t", "Büro  <a@b>"]:
        ((_, theirs),) = Relaxed.canonicalize_headers([(b"X", value.encode())])
        assert lwdkim.relaxed_value(value).encode() + b"\r\n" == theirs


@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"x y", b"  "]), max_size=30))  # CRLF bodies
def test_relaxed_body_matches_dkimpy(parts: list[bytes]) -> None:
    from dkim.canonicalization import Relaxed

    body = b"".join(parts)
    assert lwdkim.relaxed_body(body) == Relaxed.canonicalize_body(body)
