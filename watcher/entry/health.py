"""Whether the long-running watcher still works: the verdict `/healthz` gives the livenessProbe.

`watch` and `serve-webhooks` report each pass's start and end and every sign of progress inside it (a model
acted on, a wait of the Kubernetes target). A pass that shows none for STUCK_PASS_SECONDS is stuck, and so
is a loop that has finished no pass for that long beyond its longest pause; Kubernetes then restarts it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from watcher.config.settings import Settings


@dataclass(frozen=True)
class Beats:
    """Monotonic times of what the loop last did: the last pass's end (at first, the loop's start), the last
    sign of progress, and the start of the pass that runs (None between passes)."""

    finished: float
    progressed: float
    running: float | None = None


def stuck(beats: Beats, now: float, *, bound: float, idle: float) -> str | None:
    """Why the loop is stuck, or None: a pass without progress for `bound` seconds, or no pass finished for
    `bound` seconds past `idle` (the longest the loop waits between passes by design)."""
    if beats.running is not None:
        quiet = now - beats.progressed
        if quiet > bound:
            return (f"the pass running for {now - beats.running:.0f}s has shown no progress for {quiet:.0f}s "
                    f"(STUCK_PASS_SECONDS={bound:.0f})")
        return None
    since = now - beats.finished
    if since > idle + bound:
        return f"no pass has finished for {since:.0f}s (the loop waits at most {idle:.0f}s between passes)"
    return None


class Health:
    """The loop's beats, written by the loop's thread and read by the receiver's (thread-safe)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = settings.stuck_after_seconds
        self.idle = float(max(settings.poll_interval_seconds, settings.backoff_max_seconds))
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._beats = Beats(finished=now, progressed=now)

    def pass_started(self) -> None:
        with self._lock:
            now = self._clock()
            self._beats = Beats(self._beats.finished, now, running=now)

    def progressed(self) -> None:
        with self._lock:
            self._beats = Beats(self._beats.finished, self._clock(), self._beats.running)

    def pass_finished(self) -> None:
        with self._lock:
            now = self._clock()
            self._beats = Beats(now, now)

    def problem(self) -> str | None:
        """Why the loop is stuck, or None while it works."""
        with self._lock:
            beats = self._beats
        return stuck(beats, self._clock(), bound=self.bound, idle=self.idle)

    def beating(self, sleep: Callable[[float], None]) -> Callable[[float], None]:
        """`sleep` that first counts as progress: the target sleeps between the polls of every wait."""
        def beat_then_sleep(seconds: float) -> None:
            self.progressed()
            sleep(seconds)

        return beat_then_sleep
