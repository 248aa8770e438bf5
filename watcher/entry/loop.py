"""`python -m watcher watch`: a pass at start, then one every POLL_INTERVAL_SECONDS, until SIGTERM.

The loop decides when passes run (schedule, back-off after failures, passes the webhook receiver
asks for) and tells `Health` how they go; `reconcile_once` decides what a pass does. One thread runs
every pass, so two passes never overlap in one process; the Lease keeps two processes from acting at once.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

import schedule

from watcher.config.settings import Settings
from watcher.entry.health import Health
from watcher.entry.metrics import CountingTarget, Metrics
from watcher.errors import PassAborted, ServiceBuilderError, Stopping
from watcher.reconcile.deps import Deps, PassReport
from watcher.reconcile.drift import measure_deployed
from watcher.reconcile.engine import reconcile_once

log = logging.getLogger(__name__)
BuildDeps = Callable[..., Deps]
BACKOFF_INITIAL_SECONDS = 1.0
BUSY_RETRY_SECONDS = 2.0
FULL_PASS_ABOVE = 8
"""More models waiting than this: one full pass reads the registry once instead of once per model."""


def backoff_delay(failures: int, *, cap: float, initial: float = BACKOFF_INITIAL_SECONDS,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `failures` failed passes in a row: doubling, capped, then jittered to 50-100 %."""
    ceiling = min(cap, initial * 2.0 ** min(max(failures - 1, 0), 32))
    return ceiling * (0.5 + rand() / 2)


class Stop:
    """The process's stop request: SIGTERM/SIGINT set it; passes and waits check it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._wakers: list[threading.Event] = []
        self._unwound = False
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()
        for waker in self._wakers:
            waker.set()

    def wakes(self, event: threading.Event) -> None:
        """Also set `event` on stop (the loop sleeps on one event for stops and webhook requests)."""
        self._wakers.append(event)
        if self():
            event.set()

    def sleep(self, seconds: float) -> None:
        """The Kubernetes target's sleep: the first one after a stop raises Stopping, so a rollout wait
        ends and unwinds through its roll-back; later ones (the roll-back's retries) sleep normally."""
        if self._unwound:
            time.sleep(seconds)
        elif self._event.wait(seconds):
            self._unwound = True
            raise Stopping("stop requested while waiting")

    def handle_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore_signals(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Event.set() takes a lock the interrupted main thread may hold (inside Event.wait);
        # setting it from a fresh thread cannot deadlock.
        threading.Thread(target=self.set, name="stop", daemon=True).start()


class Watch:
    """The loop: scheduled full passes, requested single-model passes, back-off, all on one thread."""

    def __init__(self, deps: Deps, settings: Settings, metrics: Metrics, stop: Stop, *, dry_run: bool = False,
                 out: Callable[[str], None] = print, health: Health | None = None) -> None:
        self._counted = CountingTarget(deps.target)
        self.health = health or Health(settings)
        self.deps = replace(deps, target=self._counted, progress=self.health.progressed)
        self.settings, self.metrics, self.stop = settings, metrics, stop
        self.dry_run, self.out = dry_run, out
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        stop.wakes(self._wake)
        self._failures = 0
        self._retry_in: float | None = None

    def request(self, model: str) -> None:
        """Ask for a pass over one model as soon as the loop is free (thread-safe; repeated asks coalesce)."""
        with self._lock:
            self._pending.setdefault(model, time.monotonic())
        self._wake.set()

    def run_once(self) -> int:
        try:
            return 0 if self._poll() else 1
        except Stopping:
            log.warning("stopped during a wait: the step in progress was rolled back; the pass did not finish")
            return 1

    def run_forever(self) -> int:
        scheduler = schedule.Scheduler()
        job = scheduler.every(self.settings.poll_interval_seconds).seconds.do(self._poll)
        if self.settings.drift_interval_seconds:
            scheduler.every(self.settings.drift_interval_seconds).seconds.do(self.measure_drift)
        log.info("watching: a pass every %ss, %s", self.settings.poll_interval_seconds, self.settings.selector)
        try:
            self._poll()
            while not self.stop():
                if self._retry_in is not None:
                    job.next_run = datetime.now() + timedelta(seconds=self._retry_in)
                    log.info("next pass in %.1fs", self._retry_in)
                    self._retry_in = None
                self._wake.wait(self._seconds_to_next(scheduler))
                self._wake.clear()
                self._run_requested()
                scheduler.run_pending()
        except Stopping:
            log.warning("stopped during a wait: the step in progress was rolled back; the next pass redoes it")
        log.info("watch stopped")
        return 0

    def measure_drift(self) -> None:
        """Measure every deployed version's drift over DRIFT_WINDOW_SECONDS; one failure stops no other."""
        window = timedelta(seconds=self.settings.drift_window_seconds)
        for measured in measure_deployed(self.deps, window):
            version = measured.version
            self.metrics.drift_max_psi.labels(version.name, str(version.version)).set(measured.max_psi)

    def _seconds_to_next(self, scheduler: schedule.Scheduler) -> float:
        due = [scheduler.idle_seconds if scheduler.idle_seconds is not None else 60.0]
        with self._lock:
            due += [when - time.monotonic() for when in self._pending.values()]
        return max(0.0, min(due))

    def _run_requested(self) -> None:
        now = time.monotonic()
        with self._lock:
            models = [name for name, when in self._pending.items() if when <= now]
            for name in models:
                del self._pending[name]
        if len(models) > FULL_PASS_ABOVE:
            self._run(None, "webhook", models)
        else:
            for name in models:
                self._run(name, "webhook", [name])

    def _poll(self) -> bool:
        with self._lock:  # a full pass reads the registry after these were asked for: it covers them
            covered, self._pending = list(self._pending), {}
        return self._run(None, "poll", covered)

    def _run(self, model: str | None, trigger: str, covers: list[str]) -> bool:
        report = self._pass(model, trigger, covers)
        if report is not None and report.skipped:
            with self._lock:  # another watcher holds the lease: ask again shortly
                for name in covers:
                    self._pending.setdefault(name, time.monotonic() + BUSY_RETRY_SECONDS)
        return self._outcome(report)

    def _outcome(self, report: PassReport | None) -> bool:
        if report is None:
            self._failures += 1
            self._retry_in = backoff_delay(self._failures, cap=self.settings.backoff_max_seconds)
            return False
        self._failures = 0
        return True

    def _pass(self, model: str | None, trigger: str, eager: list[str]) -> PassReport | None:
        """One pass; None when it could not run (logged and counted, never raised). `eager`: the models webhooks
        asked for, retried at once."""
        if self.stop():
            return PassReport(skipped="stopping")
        started = time.monotonic()
        report: PassReport | None = None
        self.health.pass_started()
        try:
            report = reconcile_once(self.deps, dry_run=self.dry_run, only_model=model, out=self.out, eager=eager)
            outcome = "skipped" if report.skipped else "ok"
        except PassAborted as e:
            outcome = "aborted"
            log.error("pass aborted: %s", e)
        except ServiceBuilderError as e:
            outcome = "error"
            log.error("pass failed: %s", e)
        except Exception:
            outcome = "error"
            log.exception("pass failed unexpectedly; the loop goes on")
        finally:
            self.health.pass_finished()
        self.metrics.observe_pass(trigger, outcome, time.monotonic() - started, report,
                                  self._counted.deployed_after(report))
        return report


@contextmanager
def watching(settings: Settings, build_deps: BuildDeps, *, stop: Stop | None = None, dry_run: bool = False,
             out: Callable[[str], None] = print) -> Iterator[Watch]:
    """A ready `Watch` with signals handled and metrics served; both are undone on exit."""
    stop = stop or Stop()
    metrics, health = Metrics(), Health(settings)
    deps = build_deps(settings, stop_requested=stop, sleep=health.beating(stop.sleep))
    stop_metrics = _serve_metrics(metrics, settings)
    stop.handle_signals()
    try:
        yield Watch(deps, settings, metrics, stop, dry_run=dry_run, out=out, health=health)
    finally:
        stop.restore_signals()
        if stop_metrics is not None:
            stop_metrics()


def _serve_metrics(metrics: Metrics, settings: Settings) -> Callable[[], None] | None:
    if settings.metrics_port is None:
        return None
    try:
        return metrics.serve(settings.metrics_port, settings.listen_address)
    except OSError as e:
        raise ServiceBuilderError(f"cannot serve metrics on {settings.listen_address}:{settings.metrics_port}: "
                                  f"{e.strerror or e}") from e


def run_watch(settings: Settings, build_deps: BuildDeps, *, once: bool = False, dry_run: bool = False,
              stop: Stop | None = None, out: Callable[[str], None] = print) -> int:
    """`watch`: 0 when stopped cleanly; with `once`, 1 when the pass could not run."""
    with watching(settings, build_deps, stop=stop, dry_run=dry_run, out=out) as watch:
        return watch.run_once() if once else watch.run_forever()
