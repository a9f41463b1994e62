"""Failed sign-ins: after ``MAX_FAILURES`` within ``FAILURE_WINDOW`` seconds from one client
address (five times as many for one user name), the sign-in form answers 429 until the
oldest of them is that old (each process counts its own: enough to make guessing passwords slow; an
identity provider has its own protection)."""
from __future__ import annotations

import collections
import time

MAX_FAILURES, FAILURE_WINDOW = 10, 900.0


class Failures:
    """Recent failed sign-ins per key (a user name, a client address)."""

    def __init__(self) -> None:
        self._seen: dict[str, collections.deque[float]] = {}

    def count(self, key: str) -> int:
        times = self._seen.get(key)
        if times is None:
            return 0
        while times and time.monotonic() - times[0] > FAILURE_WINDOW:
            times.popleft()
        if not times:
            del self._seen[key]
            return 0
        return len(times)

    def add(self, key: str) -> None:
        if len(self._seen) > 100_000:  # bounded: forget the oldest keys
            for old in list(self._seen)[:50_000]:
                del self._seen[old]
        self._seen.setdefault(key, collections.deque(maxlen=MAX_FAILURES * 10)).append(
            time.monotonic())

    def clear(self, key: str) -> None:
        self._seen.pop(key, None)
