"""Campaign actors: thin; the work is in ``app.campaigns.service`` and ``app.delivery.service``."""

from __future__ import annotations

import dramatiq

from workers.broker import broker  # noqa: F401  (sets the broker before actors are declared)


@dramatiq.actor(queue_name="campaigns", max_retries=20, time_limit=6 * 3600 * 1000)
def build_campaign(campaign_id: int) -> None:
    """Write the delivery ledger for the audience, enqueueing its slices chunk by chunk
    (sending starts while the rest is written)."""
    from app.campaigns import dispatch
    from app.campaigns.service import build_audience

    feeder = dispatch.SliceFeeder(campaign_id)
    build_audience(campaign_id, on_chunk=feeder)
    feeder()  # the last rows, and all of them when the ledger had been built before


@dramatiq.actor(queue_name="sending", max_retries=20, time_limit=6 * 3600 * 1000)
def send_slice(campaign_id: int, lo: int, hi: int) -> None:
    """Send the due deliveries with ids in [lo, hi]. A duplicate message is harmless."""
    from app.campaigns.scheduler import note_sending
    from workers import sending

    note_sending(campaign_id)  # the scheduler then leaves this campaign's slices alone
    try:
        processes = sending.current()
        if processes is not None:  # the embedded broker: in a child process, off the server's GIL
            processes.run_slice(campaign_id, lo, hi)
            return
        from app.delivery.service import process_slice

        process_slice(campaign_id, lo, hi)
    finally:
        note_sending(campaign_id)
