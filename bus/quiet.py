"""Rate limiting for the log lines a broker outage repeats (librdkafka's ``Connect to ...
failed`` from every client, several a second; the clients' error callbacks).

``Quieter`` is a ``logging.Filter``: a line like one already let through (the same logger
and message once client names, numbers and durations are ignored) is dropped for
``every`` seconds; the next one let through says how many were dropped meanwhile. The
outage itself is logged once, then periodically with its duration and the outbox depth, by
the health monitor (core/health.py).
"""
from __future__ import annotations

import logging
import re
import threading
import time

EVERY = 60.0
# [rdkafka#producer-8], 127.0.0.1:9092, "after 0ms", "3 identical error(s) suppressed"
_VARYING = re.compile(r"\[rdkafka#[a-z]+-\d+\]|\d+")


class Quieter(logging.Filter):
    def __init__(self, every: float = EVERY) -> None:
        super().__init__()
        self.every = every
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, _VARYING.sub("#", record.getMessage()))
        now = time.monotonic()
        with self._lock:
            last, dropped = self._seen.get(key, (float("-inf"), 0))
            if now - last < self.every:
                self._seen[key] = (last, dropped + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # forget the oldest kinds of line
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[old]
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} like it in the last " \
                         f"{now - last:.0f}s not logged)"
            record.args = ()
        return True


def quiet(*loggers: logging.Logger, every: float = EVERY) -> None:
    """Rate-limit what each of ``loggers`` logs itself (its children are not affected)."""
    for target in loggers:
        target.addFilter(Quieter(every))
