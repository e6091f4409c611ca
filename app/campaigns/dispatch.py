"""Enqueueing campaign work (imported lazily by services, so they do not import actors)."""

from __future__ import annotations

from app.config import get_settings
from app.db import session_scope
from app.delivery import repository as ledger


def enqueue_build(campaign_id: int) -> None:
    from workers.campaigns import build_campaign

    build_campaign.send(campaign_id)


def enqueue_slices(campaign_id: int, *, after: int = 0) -> int:
    """One message per slice of the ledger that still has due rows (with ids above
    ``after``). Harmless to repeat: claiming decides who sends what."""
    return len(_enqueue_ranges(campaign_id, after))


def _enqueue_ranges(campaign_id: int, after: int) -> list[tuple[int, int]]:
    from workers.campaigns import send_slice

    settings = get_settings()
    with session_scope(settings) as session:
        ranges = ledger.open_ranges(session, campaign_id, settings.slice_size, after=after)
    for lo, hi in ranges:
        send_slice.send(campaign_id, lo, hi)
    return ranges


class SliceFeeder:
    """Enqueues the slices of a ledger as it is written, each row once: every call covers
    the rows written since the previous one."""

    def __init__(self, campaign_id: int) -> None:
        self.campaign_id = campaign_id
        self.after = 0
        self.enqueued = 0

    def __call__(self) -> None:
        ranges = _enqueue_ranges(self.campaign_id, self.after)
        if ranges:
            self.after = max(hi for _lo, hi in ranges)
            self.enqueued += len(ranges)
