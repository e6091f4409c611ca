"""Column types and helpers shared by every table."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType: Any = JSON().with_variant(JSONB(), "postgresql")
#: Provenance (where a contact came from, the evidence of a consent): ``json`` on PostgreSQL,
#: kept exactly as written and several times cheaper to store than ``jsonb`` (migration
#: 0011). Nothing filters on it in SQL beyond ``->`` / ``->>``, which ``json`` has too.
ProvenanceJSON: Any = JSON()
#: A keyed hash or digest in hex. On PostgreSQL it compares bytewise (``COLLATE "C"``,
#: migration 0005): hex digits sort the same either way, and a C.UTF-8 or ICU collation's
#: comparisons made every index probe and insert on these columns markedly slower.
HashString: Any = String(64).with_variant(String(64, collation="C"), "postgresql")


class KeyedHashType(TypeDecorator[str]):
    """A keyed address hash (``app.suppression.hashing``: 128 bits, 32 hex digits).

    Python always sees the 32 hex digits. PostgreSQL stores them as ``uuid`` (migration
    0013): 16 bytes compared with one ``memcmp``, where the hex text took 33 bytes and the
    text comparison function. These columns hold random keys (every insert lands on a random
    leaf of their indexes), so a smaller key is fewer pages to find in the buffer cache and
    to log in full after a checkpoint. Values are bound as text and cast (``uuid`` accepts
    32 hex digits); they read back as hex (``app.db`` loads every ``uuid`` so). SQLite keeps
    the hex text."""

    impl = String(64)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(UUID(as_uuid=False))
        return dialect.type_descriptor(String(64))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None or "-" not in value:
            return value
        return str(value).replace("-", "")  # a connection without app.db's loader


#: See :class:`KeyedHashType`.
KeyedHash: Any = KeyedHashType()


class Channel(StrEnum):
    EMAIL = "email"
    POSTAL = "postal"
    PHONE = "phone"


class Purpose(StrEnum):
    MARKETING = "marketing"
    SERVICE = "service"


class PreferenceStatus(StrEnum):
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"


class Source(StrEnum):
    REGISTRATION = "registration"
    SURVEY = "survey"
    SURVEY_PARTIAL = "survey_partial"
    EVENT = "event"
    IMPORT = "import"
    API = "api"
    MANUAL = "manual"


class Role(StrEnum):
    ADMIN = "admin"
    MARKETER = "marketer"
    SALES = "sales"
    COMPLIANCE = "compliance"
