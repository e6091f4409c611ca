"""DKIM signatures for the messages Listwarden assembles: RSA-SHA256 or Ed25519-SHA256
(RFC 6376, RFC 8463), relaxed/relaxed canonicalisation.

dkimpy is the reference: the tests verify our signatures with ``dkim.verify`` over many
randomised messages. It is not used on the sending path because, per message, it parses
the PEM key, re-parses the message and canonicalises with Python loops, and signs RSA in
pure Python (~8 ms); here the key is loaded once, canonicalisation is a few regular
expressions over bytes, and ``cryptography`` signs."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

#: Headers covered by the signature (DESIGN.md section 4), plus the usual ones.
SIGNED_HEADERS = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "mime-version",
    "content-type",
)

_FOLD = re.compile(rb"\r\n(?=[ \t])")
_WSP = re.compile(rb"[ \t]+")
_HEADER_LINE = re.compile(rb"\r\n(?![ \t])")


def relaxed_body(body: bytes) -> bytes:
    if b"\t" in body or b"  " in body:  # most bodies have neither: skip the regex
        body = _WSP.sub(b" ", body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    if len(body) > 2 and body[-2:] == b"\r\n" and body[-3:-2] not in (b"\r", b"\n"):  # one final CRLF
        return body
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def relaxed_header(name: bytes, value: bytes) -> bytes:
    value = _WSP.sub(b" ", _FOLD.sub(b"", value)).strip(b" ")
    return name.strip().lower() + b":" + value + b"\r\n"


def relaxed_value(value: str) -> str:
    """A header value (as it follows ``Name: ``) in relaxed canonical form (RFC 6376
    3.4.2): folds removed, runs of spaces and tabs made one space, trimmed."""
    if "\r" in value or "\t" in value or "  " in value or value[:1] == " " or value[-1:] == " ":
        return _WSP.sub(b" ", _FOLD.sub(b"", value.encode("utf-8"))).strip(b" ").decode("utf-8")
    return value


@dataclass(frozen=True)
class DkimSigner:
    selector: str
    domain: str
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    _rsa: bool = dataclass_field(init=False, repr=False, compare=False)
    #: An Ed25519 key as libsodium takes it (seed and public key), or None for RSA.
    _sodium_key: bytes | None = dataclass_field(init=False, repr=False, compare=False)
    #: The tags up to ``t=``, as written and in relaxed form.
    _tags: str = dataclass_field(init=False, repr=False, compare=False)
    _canonical_tags: str = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rsa", isinstance(self.key, rsa.RSAPrivateKey))
        sodium_key = None
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            seed = self.key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            sodium_key = crypto_sign_seed_keypair(seed)[1]
        object.__setattr__(self, "_sodium_key", sodium_key)
        algorithm = "rsa-sha256" if self._rsa else "ed25519-sha256"
        tags = f"v=1; a={algorithm}; c=relaxed/relaxed; d={self.domain}; s={self.selector}; t="
        object.__setattr__(self, "_tags", tags)
        object.__setattr__(self, "_canonical_tags", relaxed_value(tags + "0")[:-1])

    @classmethod
    def from_file(cls, path: str | Path, *, selector: str, domain: str) -> DkimSigner:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise ValueError("DKIM keys must be RSA or Ed25519")
        return cls(selector=selector, domain=domain.lower(), key=key)

    @property
    def algorithm(self) -> str:
        return "rsa-sha256" if isinstance(self.key, rsa.RSAPrivateKey) else "ed25519-sha256"

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """Return the message with a DKIM-Signature header in front."""
        head, sep, body = message.partition(b"\r\n\r\n")
        if not sep:
            head, body = message, b""
        fields = []
        for line in _HEADER_LINE.split(head):
            name, colon, value = line.partition(b":")
            if colon:
                fields.append((name.strip().lower().decode("ascii", "replace"), name, value))
        present: list[tuple[str, bytes, bytes]] = []
        for wanted in SIGNED_HEADERS:
            # the last instance of a header is signed first (RFC 6376 5.4.2); ours are unique
            for field in reversed(fields):
                if field[0] == wanted:
                    present.append(field)
                    break
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
        tags = (
            f"v=1; a={self.algorithm}; c=relaxed/relaxed; d={self.domain}; s={self.selector};"
            f" t={timestamp if timestamp is not None else int(time.time())};\r\n"
            f" h={':'.join(name for name, _, _ in present)};\r\n bh={body_hash};\r\n b="
        )
        digest = hashlib.sha256()
        for _, name, value in present:
            digest.update(relaxed_header(name, value))
        digest.update(relaxed_header(b"DKIM-Signature", b" " + tags.encode()).rstrip(b"\r\n"))
        if isinstance(self.key, rsa.RSAPrivateKey):
            signature = self.key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        else:
            signature = self.key.sign(digest.digest())
        b64 = base64.b64encode(signature).decode()
        folded = "\r\n ".join(b64[i : i + 72] for i in range(0, len(b64), 72))
        return f"DKIM-Signature: {tags}{folded}\r\n".encode() + message

    def signature_header(
        self, fields: Sequence[tuple[str, str]], body: bytes, *, timestamp: int | None = None
    ) -> bytes:
        """The ``DKIM-Signature`` header line (with its CRLF) for a message assembled from
        these header fields (name, value as written after ``Name: ``) and this body. The
        same signature as :meth:`sign` over the assembled message, without parsing it."""
        last: dict[str, tuple[str, str]] = {}
        for name, value in fields:  # the last instance of a header is the one signed
            last[name.lower()] = (name, value)
        present = [(wanted, last[wanted][1]) for wanted in SIGNED_HEADERS if wanted in last]
        canonical = "".join([f"{name}:{relaxed_value(value)}\r\n" for name, value in present])
        return self.signature_of(
            ":".join(name for name, _ in present), canonical, body_hash(body), timestamp=timestamp
        )

    def signature_of(
        self, names: str, canonical_headers: str, body_hash: str, *, timestamp: int | None = None
    ) -> bytes:
        """The ``DKIM-Signature`` header line for signed headers ``names`` (``h=``) whose
        relaxed canonical form (each ``name:value`` CRLF, in that order) is
        ``canonical_headers``, and a body whose hash is ``body_hash`` (:func:`body_hash`)."""
        stamp = timestamp if timestamp is not None else int(time.time())
        tags = f"{self._tags}{stamp};\r\n h={names};\r\n bh={body_hash};\r\n b="
        # The tags' relaxed form: the prefix's, then values that hold no white space.
        canonical = (
            f"{canonical_headers}dkim-signature:{self._canonical_tags}{stamp}; h={names}; bh={body_hash}; b="
        )
        digest = hashlib.sha256(canonical.encode("utf-8")).digest()
        if self._rsa:
            assert isinstance(self.key, rsa.RSAPrivateKey)
            signature = self.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        else:
            # Ed25519 signatures are deterministic (RFC 8032): libsodium's (PyNaCl) is the
            # one ``cryptography`` makes, for a little less CPU (~45 µs against ~55 on the
            # benchmark machine), and PyNaCl releases the GIL while it signs.
            assert self._sodium_key is not None
            signature = crypto_sign(digest, self._sodium_key)[:64]
        b64 = base64.b64encode(signature).decode()
        folded = "\r\n ".join([b64[i : i + 72] for i in range(0, len(b64), 72)])
        return f"DKIM-Signature: {tags}{folded}\r\n".encode()


def body_hash(body: bytes, *, canonical: bool = False) -> str:
    """The ``bh=`` of a body: base64 of the SHA-256 of its relaxed form. ``canonical``:
    the caller knows the body is in relaxed form already (``relaxed_body`` would return it
    unchanged), which saves looking for runs of white space in it."""
    return base64.b64encode(hashlib.sha256(body if canonical else relaxed_body(body)).digest()).decode()
