"""Enqueueing campaign work (imported lazily by services, so they do not import actors)."""

from __future__ import annotations

from app.config import get_settings
from app.db import session_scope
from app.delivery import repository as ledger


def enqueue_build(campaign_id: int) -> None:
    from workers.campaigns import build_campaign

    build_campaign.send(campaign_id)


def enqueue_slices(campaign_id: int) -> int:
    """One message per slice of the ledger that still has due rows. Harmless to repeat:
    claiming decides who sends what."""
    from workers.campaigns import send_slice

    settings = get_settings()
    with session_scope(settings) as session:
        ranges = ledger.open_ranges(session, campaign_id, settings.slice_size)
    for lo, hi in ranges:
        send_slice.send(campaign_id, lo, hi)
    return len(ranges)
