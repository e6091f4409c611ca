"""Engine and one session per unit of work (a request, an actor run, a CLI command).

Services only ``flush``; the unit of work commits or rolls back. Work that must follow a
commit (enqueuing an actor, acknowledging an opt-out) runs after ``session_scope`` exits.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from psycopg.adapt import Loader
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from app.config import Settings, get_settings

_engines: dict[str, Engine] = {}
#: How long a SQLite connection waits for another one's write lock (its busy handler).
_SQLITE_BUSY_TIMEOUT_MS = 30000
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def build_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=False
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        url = str(parsed.set(drivername="postgresql+psycopg"))
    given = make_url(url).query.get("options", ())  # ``?options=-c …`` in the URL: kept, after ours
    options = " ".join([_PG_OPTIONS, *([given] if isinstance(given, str) else given)])
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={"options": options},
        json_deserializer=json_loads,
    )
    event.listen(engine, "connect", _pg_loaders)
    return engine


def _pg_loaders(dbapi_connection: Any, _record: Any) -> None:
    """Every ``uuid`` (on PostgreSQL, the keyed hashes: migration 0013) reads as its 32 hex
    digits, the form the rest of Listwarden computes and compares, in raw queries too."""
    dbapi_connection.adapters.register_loader("uuid", HexUuidLoader)


class HexUuidLoader(Loader):
    """``uuid`` in text format (``8-4-4-4-12`` hex digits) -> the 32 hex digits."""

    def load(self, data: Any) -> str:
        return bytes(data).replace(b"-", b"").decode()


def json_loads(data: str | bytes) -> Any:
    """JSON values read from PostgreSQL, by ``orjson`` (in C): a campaign's claim reads each
    contact's ``attributes``, and the standard library's parser cost ~3 µs per row of it.
    Every value reads as ``json.loads`` reads it: a run of 16 digits or more (an integer
    beyond 64 bits, which ``orjson`` makes a float) and what ``orjson`` refuses (a lone
    surrogate, a number beyond the float range) go to the standard library."""
    if _LONG_DIGITS.search(data if isinstance(data, bytes) else data.encode()):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


_LONG_DIGITS = re.compile(rb"[0-9]{16}")


#: Session settings of every PostgreSQL connection. ``jit=off``: PostgreSQL compiles a
#: statement with LLVM when its estimated cost passes ``jit_above_cost``, which the
#: ledger's statements do without being long: each chunk of a campaign's ledger (an
#: INSERT … SELECT of 5,000 rows) spent 72 ms of its 335 in JIT compilation, and a count
#: of a large campaign's deliveries would too, every time it is polled.
_PG_OPTIONS = "-c jit=off"


def get_engine(settings: Settings | None = None) -> Engine:
    url = (settings or get_settings()).resolved_database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = build_engine(url)
        return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


#: How often :func:`begin_immediate` tries again for SQLite's write lock.
_WRITE_LOCK_POLL_SECONDS = 0.0005


def begin_immediate(session: Session, *, timeout: float = 30.0) -> None:
    """SQLite: begin the session's transaction as the writer (``BEGIN IMMEDIATE``), trying
    again every half millisecond while another connection (the sending process) writes.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 … ms between tries, so a wait
    for a 10 ms transaction of the sending process took 18 ms, and one of 20 ms took 33;
    taking the lock first also spares a transaction that read before another one committed
    the error SQLite gives it when it then writes. No-op on other databases."""
    if session.get_bind().dialect.name != "sqlite":
        return
    raw = session.connection().connection.driver_connection
    assert raw is not None
    deadline = time.monotonic() + timeout
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(_WRITE_LOCK_POLL_SECONDS)
    finally:
        raw.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")


def after_commit(session: Session, callback: Callable[[], object]) -> None:
    """Run ``callback`` once the unit of work has committed (enqueue an actor, wait for
    in-flight sends before acknowledging an opt-out). Dropped if it rolls back."""
    session.info.setdefault("after_commit", []).append(callback)


def run_after_commit(session: Session) -> None:
    callbacks: list[Callable[[], object]] = session.info.pop("after_commit", [])
    session.info.pop("settle_contacts", None)
    for callback in callbacks:
        callback()


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception; then run the
    after-commit callbacks."""
    session = Session(get_engine(settings), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        session.info.pop("after_commit", None)
        session.info.pop("settle_contacts", None)
        raise
    finally:
        session.close()
    run_after_commit(session)
