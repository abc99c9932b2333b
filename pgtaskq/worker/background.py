"""The one shape every background thread of the worker has.

Start, then call ``run_once()`` every ``interval`` seconds until stopped. An exception is
logged and followed by a growing pause (a database restart must not kill the heartbeat or
the rescuer, nor make them spin), never by the thread's death.
"""

from __future__ import annotations

import logging
import threading

from pgtaskq.backoff import Backoff
from pgtaskq.errors import first_line

log = logging.getLogger("pgtaskq.worker")

MAX_ERROR_BACKOFF = 5.0


class PeriodicThread:
    """Runs ``run_once`` every ``interval`` seconds in a daemon thread until ``stop()``."""

    name = "periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop_event = threading.Event()
        self._wake_event = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"pgtaskq-{self.name}",
                                        daemon=True)

    def run_once(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run the next iteration now rather than at the end of the interval."""
        self._wake_event.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        self._wake_event.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def _loop(self) -> None:
        backoff = Backoff(0.2, MAX_ERROR_BACKOFF)
        while not self._stop_event.is_set():
            try:
                self.run_once()
                backoff.succeeded()
                pause = self.interval
            except Exception as exc:
                pause = min(backoff.failed(), self.interval)
                log.warning("%s failed (attempt %d, next in %.1fs): %s",
                            self.name, backoff.failures, pause, first_line(exc))
            self._wake_event.wait(pause)
            self._wake_event.clear()
