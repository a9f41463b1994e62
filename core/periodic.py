"""A background thread that runs one pass of some work every ``interval`` seconds until
stopped: the sweepers (validation timeouts, expired resumable uploads, abandoned direct
uploads). A pass that raises is logged and the next one runs as planned."""
from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)


class Periodic:
    """Subclasses set ``interval`` and implement ``tick`` (one pass)."""

    name = "periodic"
    interval = 60.0
    join_timeout = 10.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(self.join_timeout)

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the next pass tries again
                logger.exception("%s: pass failed", self.name)
