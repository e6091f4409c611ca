"""Import actor: thin; the rules are in ``app.imports.service``."""

from __future__ import annotations

import dramatiq

from workers.broker import broker  # noqa: F401  (sets the broker before actors are declared)

#: An import of millions of rows takes minutes; Dramatiq's default limit is 10 minutes.
SIX_HOURS_MS = 6 * 3600 * 1000


@dramatiq.actor(queue_name="imports", max_retries=5, min_backoff=5000, time_limit=SIX_HOURS_MS)
def run_import(import_id: int) -> None:
    """Run or resume an import; a retry continues from the last committed batch."""
    from app.imports.service import run

    run(import_id)
