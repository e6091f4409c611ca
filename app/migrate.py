"""Run Alembic migrations from the installed package, from any working directory."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.config import MIGRATIONS_DIR, Settings, get_settings
from app.db import get_engine


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    settings = settings or get_settings()
    url = settings.resolved_database_url
    cfg = alembic_config(url)
    engine = get_engine(settings)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def is_up_to_date(settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    cfg = alembic_config(settings.resolved_database_url)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with get_engine(settings).connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current == head
