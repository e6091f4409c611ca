"""Imports of lead files, with their row-level rejects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, PrimaryKeyConstraint, String, Text
from sqlmodel import Field, SQLModel

from app.models.base import JSONType, KeyedHash, UTCDateTime, utcnow


class Import(SQLModel, table=True):
    """Status: stored -> running -> done | failed."""

    __tablename__ = "import_job"
    __table_args__ = (Index("ix_import_job_status", "status", "heartbeat_at"),)

    id: int | None = Field(default=None, primary_key=True)
    filename: str = Field(sa_column=Column(String(255), nullable=False))
    stored_path: str = Field(sa_column=Column(String(1000), nullable=False))
    sha256: str | None = Field(default=None, sa_column=Column(String(64)))
    size_bytes: int = 0
    source: str = Field(default="import", sa_column=Column(String(20), nullable=False))
    mapping: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType))
    #: encoding, delimiter, consent text/version, default topics, date order, region, …
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType))
    merge_policy: str = Field(default="fill_empty", sa_column=Column(String(20), nullable=False))
    status: str = Field(default="stored", sa_column=Column(String(10), nullable=False))
    failure_reason: str | None = Field(default=None, sa_column=Column(Text))
    rows_total: int | None = None
    rows_done: int = 0
    counts: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSONType))
    created_by_token_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("api_token.id"))
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: {"partitions": n, "done": {partition: last row committed}}: where a resumed import goes on.
    progress: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType))
    #: Touched with every committed batch; a running import silent for long is resumed.
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ImportSeen(SQLModel, table=True):
    """The people (keyed hash) an import has met so far: a later row for one of them is a
    duplicate inside the file. Kept in the database so memory stays flat; dropped when
    the import finishes."""

    __tablename__ = "import_seen"
    __table_args__ = (PrimaryKeyConstraint("import_id", "key_hash"),)

    import_id: int = Field(
        sa_column=Column(Integer, ForeignKey("import_job.id", ondelete="CASCADE"), nullable=False)
    )
    key_hash: str = Field(sa_column=Column(KeyedHash, nullable=False))


class ImportReject(SQLModel, table=True):
    __tablename__ = "import_reject"
    __table_args__ = (Index("ix_import_reject_import", "import_id", "row_number"),)

    id: int | None = Field(default=None, primary_key=True)
    import_id: int = Field(
        sa_column=Column(Integer, ForeignKey("import_job.id", ondelete="CASCADE"), nullable=False)
    )
    row_number: int
    field: str | None = Field(default=None, sa_column=Column(String(100)))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    raw: str | None = Field(default=None, sa_column=Column(Text))
