"""In-process rate limits for the public "unsubscribe by email address" form.

Token buckets (``app.delivery.ratelimit.TokenBucket``) keyed by client IP and by address
hash, ``n`` per hour with a burst of ``n``. The table is bounded: past ``max_keys`` the
least recently used keys are forgotten (a forgotten key starts again with a full bucket,
which only errs towards letting a person through)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from app.delivery.ratelimit import TokenBucket


class HourlyLimiter:
    def __init__(self, max_keys: int = 50_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[tuple[str, int], TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str, per_hour: int) -> bool:
        """Take one token from ``key``'s bucket; False when it is empty."""
        with self._lock:
            bucket = self._buckets.get((key, per_hour))
            if bucket is None:
                bucket = TokenBucket(per_hour / 3600.0, burst=float(per_hour))
                self._buckets[(key, per_hour)] = bucket
                while len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end((key, per_hour))
        return bucket.try_take()

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


LIMITER = HourlyLimiter()
