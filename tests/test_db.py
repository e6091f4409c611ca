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


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_json_reads_as_the_standard_library_reads_it(db: Settings, session: Session) -> None:
    """JSON columns are parsed by orjson, falling back to the standard library for what
    orjson refuses: every value reads as ``json.loads`` reads it."""
    import json

    from app.db import json_loads

    values = [
        '{"plan": "pro", "seats": 3, "ratio": 0.1, "tags": ["a", "ü"], "none": null}',
        '{"big": 123456789012345678901234567890, "small": -9223372036854775809}',
        '{"u64": 18446744073709551616, "f": 0.1000000000000000055511151231257827}',
        '{"surrogate": "\\ud800", "huge": 1e400}',
        "[]",
    ]
    for value in values:
        assert json_loads(value) == json.loads(value)
        found = session.execute(sa.text("SELECT CAST(:v AS json)"), {"v": value}).scalar_one()
        assert found == json.loads(value)
    raw = session.connection().connection.driver_connection
    loader = raw.adapters.get_loader(raw.adapters.types["json"].oid, 0)
    assert loader is not None and loader._loads is json_loads  # type: ignore[attr-defined]
