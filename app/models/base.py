"""Column types and helpers shared by every table."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.dialects.postgresql import JSONB
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
