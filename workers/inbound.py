"""Inbound actor: thin; the rules are in ``app.inbound.service``."""

from __future__ import annotations

import dramatiq

from workers.broker import broker  # noqa: F401  (sets the broker before actors are declared)


@dramatiq.actor(queue_name="inbound", max_retries=10, min_backoff=2000, max_backoff=10 * 60 * 1000)
def classify_inbound(message_id: int) -> None:
    """Classify a stored message and apply its effects. A failure leaves it stored and
    ``pending``; the broker retries it."""
    from app.inbound.service import process

    process(message_id)
