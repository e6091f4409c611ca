"""Token buckets for sending rates (per campaign, per recipient domain), per process."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_take(self, n: float = 1.0) -> bool:
        with self.lock:
            self._refill()
            if self.tokens >= n:
                self.tokens -= n
                return True
            return False

    def wait_time(self, n: float = 1.0) -> float:
        with self.lock:
            self._refill()
            return max(0.0, (n - self.tokens) / self.rate)


class Buckets:
    """Lazily created buckets by key, all with the same rate."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, float], TokenBucket] = {}
        self._lock = threading.Lock()

    def get(self, key: str, rate: float) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get((key, rate))
            if bucket is None:
                bucket = self._buckets[(key, rate)] = TokenBucket(rate)
            return bucket


BUCKETS = Buckets()
