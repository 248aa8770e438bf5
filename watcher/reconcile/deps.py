"""The collaborators of one pass, wired once by the caller (`watcher.entry.cli.build_deps`, or a test), and the
pass's report.

Steps take the parts they use: the recorder and the gate are built here from theirs, once per `Deps`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from watcher.clients.artifacts import S3Store
from watcher.clients.registry import Registry
from watcher.config.settings import Settings
from watcher.reconcile.gate import Gate
from watcher.reconcile.ports import Target
from watcher.reconcile.record import Recorder
from watcher.render.manifests import Renderer


@dataclass(frozen=True)
class Deps:
    """Everything a pass talks to, passed in (tests build their own)."""

    settings: Settings
    registry: Registry
    store: S3Store
    target: Target
    renderer: Renderer
    clock: Callable[[], datetime]
    stop_requested: Callable[[], bool] = lambda: False
    progress: Callable[[], None] = lambda: None
    """Told as the pass moves on to each action (the `watch` loop's health listens)."""
    monotonic: Callable[[], float] = time.monotonic
    """The pass's stopwatch (its duration, PASS_DEADLINE_SECONDS)."""

    @cached_property
    def recorder(self) -> Recorder:
        return Recorder(self.registry, self.target.endpoint, self.clock, self.settings.retry_backoff_max_seconds)

    @cached_property
    def gate(self) -> Gate:
        return Gate(self.recorder, self.registry, self.store, self.target, self.settings.evaluation_timeout_seconds,
                    self.clock)


@dataclass
class PassReport:
    found: int = 0
    deployed: int = 0
    updated: int = 0
    unchanged: int = 0
    superseded: int = 0
    undeployed: int = 0
    failed: int = 0
    deferred: int = 0
    """Deployments left to the next pass: less than one model's worst case was left of PASS_DEADLINE_SECONDS."""
    seconds: float = 0.0
    skipped: str = ""
    """Why the pass did nothing (another watcher held the lease), else empty."""
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = ("found", "deployed", "updated", "unchanged", "superseded", "undeployed", "failed")
        text = " ".join(f"{name}={getattr(self, name)}" for name in counts)
        deferred = f" deferred={self.deferred}" if self.deferred else ""
        return (f"pass done: {text}{deferred} duration={self.seconds:.2f}s"
                + (f" skipped: {self.skipped}" if self.skipped else ""))
