"""Engines: PostgreSQL connections run without JIT compilation, and options given in the
database URL are kept."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from app.config import Settings
from app.db import build_engine


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_postgresql_sessions_run_without_jit(db: Settings, session: Session) -> None:
    assert session.execute(sa.text("SHOW jit")).scalar_one() == "off"


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_options_in_the_url_are_kept(db: Settings) -> None:
    url = sa.make_url(db.resolved_database_url).update_query_dict({"options": "-c statement_timeout=4321"})
    engine = build_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW jit")).scalar_one() == "off"
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "4321ms"
    finally:
        engine.dispose()
