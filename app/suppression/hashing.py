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
import hmac
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
    message = f"{IdentifierKind(kind).value}:{normalised}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()[: HASH_HEX_DIGITS // 2].hex()
