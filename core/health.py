"""Health kept by a background check, so that ``GET /api/v1/health`` (and ``/readyz``)
answer at once from the last results instead of waiting on a broker that does not answer.

Each component (storage, database, bus) is checked by a thread of its own every
``INTERVAL`` seconds (a check that hangs holds up only its own component). A component is
down while its last check failed, and also when its check has not answered for
``STALE`` seconds. The monitor logs an outage once when it starts, then every
``LOG_EVERY`` seconds with how long it has lasted (and, for the bus, how many messages the
outbox holds meanwhile), and once when it ends.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger(__name__)

INTERVAL = 2.0
STALE = 30.0
LOG_EVERY = 60.0


def duration(seconds: float) -> str:
    """``95.2`` → ``1m35s``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


@dataclass
class _State:
    down: str | None = "not checked yet"
    checked: float | None = None  # monotonic time of the last answer
    down_since: float | None = None
    logged: float = 0.0


class HealthMonitor:
    def __init__(self, checks: dict[str, Callable[[], None]],
                 outbox_depth: Callable[[], int] | None = None,
                 interval: float = INTERVAL, log_every: float = LOG_EVERY) -> None:
        self.checks = checks
        self.outbox_depth = outbox_depth
        self.interval = interval
        self.log_every = log_every
        self._states = {name: _State() for name in checks}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.first = threading.Event()  # every component answered once

    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            self._threads = [threading.Thread(target=self._run, args=(name,), daemon=True,
                                              name=f"health-{name}") for name in self.checks]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def down(self) -> dict[str, str]:
        """The components that are down now, with why."""
        now = time.monotonic()
        result = {}
        with self._lock:
            for name, state in self._states.items():
                if state.checked is not None and now - state.checked > STALE + self.interval:
                    result[name] = f"no answer for {duration(now - state.checked)}"
                elif state.down is not None:
                    result[name] = state.down
        return result

    def _run(self, name: str) -> None:
        while not self._stop.is_set():
            try:
                self.checks[name]()
            except Exception as exc:  # noqa: BLE001 - any failure means the component is down
                self._record(name, str(exc) or type(exc).__name__)
            else:
                self._record(name, None)
            self._stop.wait(self.interval)

    def _record(self, name: str, down: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._states[name]
            was, since = state.down, state.down_since
            state.down, state.checked = down, now
            if down is None:
                state.down_since = None
            elif since is None:
                state.down_since = since = now
            report = down is not None and (was is None or was == "not checked yet"
                                           or now - state.logged >= self.log_every)
            if report:
                state.logged = now
            if all(s.checked is not None for s in self._states.values()):
                self.first.set()
        if down is None and was is not None and since is not None:
            logger.info("%s available again after %s", name, duration(now - since))
        elif report and since is not None:
            self._report(name, down or "", now - since)

    def _report(self, name: str, reason: str, lasted: float) -> None:
        held = ""
        if name == "bus" and self.outbox_depth is not None:
            try:
                held = f"; the outbox holds {self.outbox_depth()} messages for it"
            except Exception:  # noqa: BLE001 - the database may be down too
                held = "; outbox depth unknown"
        if lasted < self.interval:
            logger.warning("%s unavailable: %s%s", name, reason, held)
        else:
            logger.warning("%s unavailable for %s: %s%s", name, duration(lasted), reason, held)
