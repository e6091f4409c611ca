"""Shared fixtures.

Every test that asks for ``db`` (or ``client``, ``session``) runs twice: on SQLite and on a
real PostgreSQL server, each in a database of its own made by Alembic. Locally a test is
skipped when PostgreSQL is absent; with ``CI=true`` an absent service is a failure."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.config import Settings, use_settings
from app.db import dispose_engines, get_engine
from app.migrate import upgrade

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get(
    "LISTWARDEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
KEEP_TABLES = {"alembic_version", "topic"}
SEED_TOPICS = ("member-updates", "special-offers", "partner-offers", "surveys")


def service_missing(name: str, error: Exception) -> None:
    message = f"{name} is not reachable: {error}"
    if IN_CI:
        pytest.fail(message + " (CI=true: real services are required)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # the server is down or refuses us
        service_missing("PostgreSQL", exc)
    yield engine
    engine.dispose()


def _create_pg_database(admin: sa.Engine) -> tuple[str, str]:
    name = f"lw_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    return name, url


def _drop_pg_database(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database of this test session's own, on each backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "listwarden.db"
        url = f"sqlite:///{path}"
        upgrade(Settings(database_url=url, secret_key="migrate"))
        yield url
        return
    admin = request.getfixturevalue("pg_admin")
    name, url = _create_pg_database(admin)
    try:
        upgrade(Settings(database_url=url, secret_key="migrate"))
        yield url
    finally:
        dispose_engines()
        _drop_pg_database(admin, name)


def make_settings(url: str, var_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "var_dir": var_dir,
        "secret_key": "test-secret-key-0123456789",
        "public_url": "https://lists.example.test",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def _clean(url: str) -> None:
    engine = get_engine(Settings(database_url=url, secret_key="x"))
    with engine.begin() as conn:
        tables = [t for t in sa.inspect(conn).get_table_names() if t not in KEEP_TABLES]
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
            )
        else:
            conn.execute(sa.text("PRAGMA foreign_keys=OFF"))
            for table in tables:
                conn.execute(sa.text(f'DELETE FROM "{table}"'))
            conn.execute(sa.text("PRAGMA foreign_keys=ON"))
        conn.execute(
            sa.text("DELETE FROM topic WHERE slug NOT IN :keep").bindparams(
                sa.bindparam("keep", expanding=True)
            ),
            {"keep": list(SEED_TOPICS)},
        )
    if engine.dialect.name == "sqlite":
        # ``PRAGMA foreign_keys = ON`` inside the transaction above was a no-op, which left
        # this pooled connection checking no foreign key for the test that came next: new
        # connections get the application's pragmas again.
        engine.dispose()


@pytest.fixture
def settings(backend_url: str, tmp_path: Path) -> Iterator[Settings]:
    s = make_settings(backend_url, tmp_path / "var")
    use_settings(s)
    _clean(backend_url)
    yield s
    use_settings(None)


@pytest.fixture
def db(settings: Settings) -> Settings:
    """A clean, migrated database on the current backend, with settings installed."""
    return settings


@pytest.fixture
def session(db: Settings) -> Iterator[Session]:
    with Session(get_engine(db), expire_on_commit=False) as s:
        yield s


@pytest.fixture
def app(db: Settings):  # type: ignore[no-untyped-def]
    from app.main import create_app

    return create_app(db, start_workers=False)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c


@pytest.fixture
def token_for(db: Settings) -> Callable[[str], dict[str, str]]:
    """``token_for("sales")`` -> headers carrying a fresh bearer token of that role."""
    from app.auth.service import create_token
    from app.db import session_scope

    def make(role: str) -> dict[str, str]:
        with session_scope(db) as s:
            _row, plain = create_token(s, role, name=f"test-{role}")
        return {"Authorization": f"Bearer {plain}"}

    return make


@pytest.fixture
def admin_headers(token_for: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return token_for("admin")


@pytest.fixture
def smtp_server() -> Iterator[object]:
    """A real SMTP server (aiosmtpd) in this process; ``.handler.received`` holds what it got."""
    from tests.smtp_server import SmtpServer

    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def stub_worker(db: Settings) -> Iterator[Callable[[], None]]:
    """Run the Dramatiq stub broker's queued work to completion: ``stub_worker()``."""
    import dramatiq

    from workers.broker import broker, import_actors

    import_actors()
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()

    def drain() -> None:
        for _ in range(3):  # actors enqueue more work (build -> slices)
            for queue in sorted(broker.get_declared_queues()):
                broker.join(queue, fail_fast=True)

    yield drain
    worker.stop()
    broker.flush_all()
