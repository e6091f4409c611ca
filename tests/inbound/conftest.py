"""Fixtures of the inbound tests: storing a message the way the intake does, processing it
the way the actor does, and a Dramatiq worker on the stub broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from app.config import Settings
from app.db import session_scope
from app.inbound import service
from app.inbound.settings import InboundSettings, use_inbound_settings


@pytest.fixture(autouse=True)
def _inbound_settings() -> Iterator[None]:
    use_inbound_settings(InboundSettings())
    yield
    use_inbound_settings(None)


@pytest.fixture
def receive(db: Settings) -> Iterator[Callable[..., int]]:
    """``receive(raw, envelope_to=…)`` stores a message and returns its id (the broker
    message it enqueues is dropped: tests call ``service.process`` themselves)."""
    from workers.broker import broker

    def store(raw: bytes, *, envelope_from: str | None = None, envelope_to: str | None = None) -> int:
        with session_scope(db) as session:
            row, _created = service.store(
                session, service.Received.of(raw), envelope_from=envelope_from, envelope_to=envelope_to
            )
            assert row.id is not None
            return row.id

    yield store
    broker.flush_all()


@pytest.fixture
def inbound_worker(db: Settings) -> Iterator[Callable[[], None]]:
    """A Dramatiq worker on the stub broker; calling the fixture waits for the queue."""
    import dramatiq

    from workers.broker import broker, import_actors

    import_actors()
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()

    def drain() -> None:
        broker.join("inbound", fail_fast=True, timeout=30_000)

    yield drain
    worker.stop()
    broker.flush_all()
