"""The keyed hash that suppressions are stored and matched under.

HMAC-SHA256 with a server key over ``kind:normalised-identifier``. Without the key, a
copy of the database does not reveal which addresses were suppressed or erased, and the
same person is recognised whatever the letter case or spelling of their address.

The digest is kept to its first 128 bits (32 hex digits; migration 0007). With a secret
key, 128 bits leave no practical chance of two addresses sharing a hash (about 1 in 10^21
for a billion addresses), while the full 64 digits doubled the size of every hash column
and of its index (contacts, the consent ledger, suppressions): with 32, a contact row and
its indexes take a quarter less room, and an import's database time per lead fell by about
a seventh. A truncated hash is the prefix of the full one, so a full digest kept elsewhere
still finds its row (``left(h, 32)``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import StrEnum

from app.config import get_settings

#: Hex digits of a keyed hash (128 bits of HMAC-SHA256).
HASH_HEX_DIGITS = 32


class IdentifierKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    POSTAL = "postal"
    DOMAIN = "domain"


def keyed_hash(kind: IdentifierKind | str, normalised: str, *, key: bytes | None = None) -> str:
    secret = key if key is not None else get_settings().address_hash_key()
    return keyed_hasher(secret)(IdentifierKind(kind).value, normalised)


def keyed_hasher(key: bytes) -> Callable[[str, str], str]:
    """``(kind, normalised) -> keyed hash`` under ``key``: HMAC-SHA256 (RFC 2104) with the
    key's inner and outer pads hashed once, so each hash copies two prepared SHA-256 states
    (0.9 µs instead of 1.6 for copying an ``hmac`` object, 4 for a fresh one). An import
    hashes one to three identifiers per row. A property test checks it against ``hmac``."""
    found = _HASHERS.get(key)
    if found is not None:
        return found
    block = (hashlib.sha256(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\0")
    inner = _sha256(bytes(b ^ 0x36 for b in block)).copy
    outer = _sha256(bytes(b ^ 0x5C for b in block)).copy
    size = HASH_HEX_DIGITS // 2

    def hasher(kind: str, normalised: str) -> str:
        first = inner()
        first.update(f"{kind}:{normalised}".encode())
        second = outer()
        second.update(first.digest())
        return second.digest()[:size].hex()

    if len(_HASHERS) > 16:
        _HASHERS.clear()
    _HASHERS[key] = hasher
    return hasher


_BLOCK = 64  # SHA-256's block size
_HASHERS: dict[bytes, Callable[[str, str], str]] = {}
try:  # the interpreter's own SHA-256: cheaper to copy than OpenSSL's for messages this short
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - other interpreters
    _sha256 = hashlib.sha256
