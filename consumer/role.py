"""``python app.py bundler``: the bundler's consumer and its worker, on shared Services.

The consumer (``consumer.events``, group ``bundler``) records events and marks plans
pending; the worker thread checks pending plans every ``POLL_INTERVAL`` seconds (at once
when the consumer wakes it) and bundles the ready ones. Associations come from the
gateway's API, possibly in another process: the worker finds them on its next poll. Any
number of bundler processes may run: claims in the database keep each bundle built once.
"""
from __future__ import annotations

import logging
import threading

from consumer.bundler import Bundler
from consumer.events import TOPICS, TransferEvents
from core.consumer import ConsumerLoop
from core.services import Services

logger = logging.getLogger(__name__)

GROUP = "bundler"
POLL_INTERVAL = 0.5


class BundlerRole:
    def __init__(self, services: Services, group: str = GROUP,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.bundler = Bundler(services.settings, services.storage, services.database,
                               services.relay.wake)
        self.events = TransferEvents(services.settings, services.database, self.wake)
        self.loop = ConsumerLoop(services.bus, group, TOPICS, self.events, name="bundler")
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self.loop.start()
        self._thread = threading.Thread(target=self.run, name="bundler-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self.bundler.stopping.set()
        self._wake.set()
        self.loop.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self.bundler.stopping.is_set():
            try:
                built = self.bundler.run_pending()
            except Exception:  # noqa: BLE001 - database down: the worker waits and retries
                logger.exception("bundler worker pass failed; retrying")
                built = 0
                self.bundler.stopping.wait(1.0)
            if not built:
                self._wake.wait(self.poll_interval)
                self._wake.clear()
