"""Migrations: the models and the migrations agree, and they go down and up again,
on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app.config import Settings
from app.db import get_engine
from app.migrate import alembic_config, upgrade


def test_models_match_migrations(db: Settings) -> None:
    with get_engine(db).connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": False}), SQLModel.metadata
        )
    assert diff == [], diff


def test_downgrade_and_upgrade_again(db: Settings) -> None:
    cfg = alembic_config(db.resolved_database_url)
    engine = get_engine(db)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    upgrade(db)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is not None
