"""The worker's main loop: sleep until there is a reason to claim, then claim.

It sleeps in ``Listener.wait()`` (a ``select()`` on the LISTEN socket and a self-pipe).
It wakes on a NOTIFY for a queue it serves, a slot finishing while a backlog is known, a
cancel request, a signal, a task timeout, the next known deferred job, a cron tick, or
the poll interval (the fallback that makes NOTIFY an optimisation, never a
requirement), or the end of producers that may have missed its announcement that it
waits (``pgtaskq.worker.waiting``: producers notify only workers that wait). A
notification is a hint (``pgtaskq.worker.hints``): rate-limited, never proof of work.
Everything here runs in the main thread, and each iteration does work independent of
how many jobs are held.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from pgtaskq.errors import first_line
from pgtaskq.worker import systemd

if TYPE_CHECKING:
    from pgtaskq.worker.cancels import Cancels
    from pgtaskq.worker.capacity import Capacity
    from pgtaskq.worker.claimer import Claimer
    from pgtaskq.worker.due import DueTimes
    from pgtaskq.worker.exit_rules import ExitRules
    from pgtaskq.worker.hints import NotificationHints
    from pgtaskq.worker.listener import Events, Listener
    from pgtaskq.worker.timeouts import Timeouts
    from pgtaskq.worker.waiting import Waiting

log = logging.getLogger("pgtaskq.worker")


class LoopTimer(Protocol):
    """Work the main loop does on time (cron ticks): it wakes for ``seconds_until_due``.

    ``run_due`` runs in the main thread, so it must be quick (one statement or so);
    exceptions are logged and the loop goes on.
    """

    def seconds_until_due(self) -> float | None: ...

    def run_due(self) -> None: ...


class MainLoop:
    """One worker's main loop; ``run()`` returns once ``stop`` is set."""

    def __init__(self, *, worker_id: int, queues: list[str] | None, poll_interval: float,
                 completer_flush_interval: float, stop: threading.Event,
                 listener: Listener, hints: NotificationHints, capacity: Capacity,
                 claimer: Claimer, due: DueTimes, cancels: Cancels, timeouts: Timeouts,
                 exit_rules: ExitRules, timers: list[LoopTimer], waiting: Waiting) -> None:
        self._worker_id = worker_id
        self._queues = queues
        self._poll_interval = poll_interval
        self._completer_flush_interval = completer_flush_interval
        self._stop = stop
        self._listener = listener
        self._hints = hints
        self._capacity = capacity
        self._claimer = claimer
        self._due = due
        self._cancels = cancels
        self._timeouts = timeouts
        self._exit_rules = exit_rules
        self._timers = timers
        self._waiting = waiting

    def run(self) -> None:
        listener = self._listener
        capacity = self._capacity
        claimer = self._claimer
        claim_now = True
        claim_by_notification = False
        next_poll = time.monotonic() + self._poll_interval
        watchdog = systemd.watchdog_interval()
        next_watchdog = time.monotonic() if watchdog else None
        while not self._stop.is_set():
            now = time.monotonic()
            if next_watchdog is not None and watchdog and now >= next_watchdog:
                systemd.notify("WATCHDOG=1")
                next_watchdog = now + watchdog
            if claim_now and now >= claimer.not_before:
                found = claimer.claim()
                self._hints.claimed(time.monotonic(), found, claim_by_notification)
                next_poll = time.monotonic() + self._poll_interval
                claim_now = False
            if self._exit_rules.active and self._should_exit():
                break
            # Jobs that finished during the claim may already have freed enough capacity
            # for the next one: then do not sleep (their wake-up may have been coalesced).
            # (Not while a failed claim backs off: _timeout() waits for that.)
            refill_now = capacity.refill_due() and time.monotonic() >= claimer.not_before
            timeout = 0.0 if refill_now else self._timeout(next_poll, next_watchdog)
            events = listener.wait(timeout)
            capacity.woke()
            now = time.monotonic()
            self._cancels.notified(events)
            self._timeouts.enforce(now)
            self._run_timers()
            polled = now >= next_poll
            if polled:
                self._cancels.poll()
                self._due.lookup(force=True)
                next_poll = now + self._poll_interval
            notified = ((self._wanted(events) and self._hints.notified(now))
                        or self._hints.pending_claim_due(now))
            crossed_ended = self._waiting.claim_due(now)  # pgtaskq.worker.waiting
            other_reason = (polled or events.reconnected or crossed_ended
                            or self._due.deferred_due(time.monotonic()))
            work_signalled = other_reason or notified
            room = capacity.room() > 0
            if work_signalled and not room:
                # Full now (capacity can shrink without a full claim: adaptive prefetch,
                # unacknowledged outcomes): remember the work, so the slot that frees
                # room wakes the loop instead of the job waiting for the next poll.
                capacity.note_backlog()
            refill = capacity.refill_due()
            claim_now = room and (work_signalled or refill)
            claim_by_notification = claim_now and notified and not (other_reason or refill)
            if self._exit_rules.needs_idle_claim(capacity.outstanding):
                claim_now = True

    def _should_exit(self) -> bool:
        """An exit rule holds: stop gracefully, as on SIGTERM (exit status 0)."""
        reason = self._exit_rules.reason_to_stop(self._capacity.outstanding)
        if reason is None:
            return False
        log.info("worker %s stopping by itself (%s)", self._worker_id, reason)
        self._stop.set()
        return True

    def _run_timers(self) -> None:
        for timer in self._timers:
            try:
                due = timer.seconds_until_due()
                if due is not None and due <= 0:
                    timer.run_due()
            except Exception as exc:
                log.warning("%s failed: %s", type(timer).__name__, first_line(exc))

    def _timeout(self, next_poll: float, next_watchdog: float | None) -> float:
        now = time.monotonic()
        not_before = self._claimer.not_before
        deadlines = [next_poll]
        if next_watchdog is not None:
            deadlines.append(next_watchdog)
        next_deferred = self._due.next_deferred
        if next_deferred is not None and self._capacity.free() > 0:
            # never before a failed claim's backoff ends (a due deferred job would spin)
            deadlines.append(max(now, next_deferred, not_before))
        deadlines.extend(self._timeouts.deadlines())
        for timer in self._timers:
            due = timer.seconds_until_due()
            if due is not None:
                deadlines.append(now + max(0.0, due))
        if not_before > now:
            deadlines.append(not_before)
        if self._capacity.waiting_for_completer():
            # Waiting for the completer, which does not wake the loop: look again soon.
            deadlines.append(now + self._completer_flush_interval)
        crossed = self._waiting.deadline()
        if crossed is not None:
            deadlines.append(crossed)
        hinted = self._hints.deadline()
        if hinted is not None:
            deadlines.append(hinted)
        reconnect = self._listener.seconds_to_reconnect()
        if reconnect is not None:
            deadlines.append(now + reconnect)
        return max(0.0, min(deadlines) - now)

    def _wanted(self, events: Events) -> bool:
        if not events.queues:
            return False
        return self._queues is None or not events.queues.isdisjoint(self._queues)
