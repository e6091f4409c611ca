"""The keyed hash that suppressions are stored and matched under.

HMAC-SHA256 with a server key over ``kind:normalised-identifier``. Without the key, a
copy of the database does not reveal which addresses were suppressed or erased, and the
same person is recognised whatever the letter case or spelling of their address."""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum

from app.config import get_settings


class IdentifierKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    POSTAL = "postal"
    DOMAIN = "domain"


def keyed_hash(kind: IdentifierKind | str, normalised: str, *, key: bytes | None = None) -> str:
    secret = key if key is not None else get_settings().address_hash_key()
    message = f"{IdentifierKind(kind).value}:{normalised}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
