"""Per-account request limits: a rate (token bucket) and a concurrency cap."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["ConcurrencyLimit", "RateLimit"]


class RateLimit:
    """Admits ``rate`` requests per second on average, in bursts of ``rate``.

    Args:
        rate: Requests per second; must be positive.
        clock: Monotonic clock in seconds, replaceable in tests.
    """

    def __init__(
        self, rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate_limit must be positive, got {rate}")
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> int | None:
        """Take one request's worth of budget.

        Returns:
            None if the request is admitted, else the whole seconds to wait
            before the budget allows another one (at least 1).
        """
        with self._lock:
            now = self._clock()
            elapsed = now - self._stamp
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - self._tokens) / self._rate))


class ConcurrencyLimit:
    """Admits at most ``limit`` requests in flight at once."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrency must be 1 or more, got {limit}")
        self._limit = limit
        self._in_flight = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """Count one more request in flight; False (and no count) if full."""
        with self._lock:
            if self._in_flight >= self._limit:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        """Count one request as finished."""
        with self._lock:
            self._in_flight -= 1
