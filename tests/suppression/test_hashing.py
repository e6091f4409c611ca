"""The keyed hash: HMAC-SHA256 of ``kind:normalised`` under the server's key, its first 128
bits in hex."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from app.imports.prepare import keyed
from app.suppression.hashing import HASH_HEX_DIGITS, keyed_hash, keyed_hasher


@settings(max_examples=500, deadline=None)
@given(
    key=st.binary(min_size=0, max_size=150),
    kind=st.sampled_from(["email", "phone"]),
    value=st.text(max_size=80),
)
def test_the_prepared_pads_give_hmac_sha256(key: bytes, kind: str, value: str) -> None:
    """Keys shorter and longer than SHA-256's block (longer ones are hashed first, as
    RFC 2104 says), any text."""
    reference = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:HASH_HEX_DIGITS]
    assert keyed_hasher(key)(kind, value) == reference
    assert keyed_hash(kind, value, key=key) == reference
    assert keyed(key, kind, value) == reference


def test_each_key_hashes_on_its_own() -> None:
    one, two = keyed_hasher(b"a" * 32), keyed_hasher(b"b" * 32)
    assert one("email", "ada@example.org") != two("email", "ada@example.org")
    assert one("email", "ada@example.org") != one("phone", "ada@example.org")
    assert len(one("email", "ada@example.org")) == HASH_HEX_DIGITS == 32
