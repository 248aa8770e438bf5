"""Retry arithmetic: how long a version the cluster keeps failing waits before its next try.

Pure; the record lives in the version's `deployment_attempt` tag, so it holds across the CronJob's fresh
processes. Used by the plan (is a version pausing?) and by the recorder (the next record after a failure).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

RETRY_FIRST_SECONDS = 60.0
"""The pause before the third try of a version the cluster keeps failing; it doubles with each failure."""


@dataclass(frozen=True)
class Retrying:
    """A failure worth another try (the cluster's, or a transient one), as the `deployment_attempt` tag keeps it
    between passes and processes: `<inputs key> failures=N [retry_after=<UTC time>]`. A permanent failure keeps
    the bare key instead."""

    key: str
    failures: int
    after: datetime | None = None

    def __str__(self) -> str:
        after = f" retry_after={utc_text(self.after)}" if self.after else ""
        return f"{self.key} failures={self.failures}{after}"

    @classmethod
    def parse(cls, text: str) -> Retrying | None:
        """The record in a tag value, or None when it is not one (empty, a bare key, edited by hand)."""
        parts = text.split()
        fields = dict(part.partition("=")[::2] for part in parts[1:])
        if len(parts) not in (2, 3) or set(fields) - {"failures", "retry_after"} or \
                not fields.get("failures", "").isdigit():
            return None
        try:
            after = datetime.fromisoformat(fields["retry_after"]) if "retry_after" in fields else None
        except ValueError:
            return None
        return cls(parts[0], int(fields["failures"]), as_utc(after) if after else None)

    def next(self, key: str, now: datetime, cap: float) -> Retrying:
        """The record after one more failure with inputs `key` (a change of inputs starts counting anew)."""
        failures = self.failures + 1 if key == self.key else 1
        delay = retry_delay(failures, cap)
        return Retrying(key, failures, as_utc(now) + timedelta(seconds=delay) if delay else None)


def retry_delay(failures: int, cap: float) -> float:
    """Seconds before the next try after `failures` in a row: none after the first (a blip is retried by the next
    pass), then RETRY_FIRST_SECONDS doubling, at most `cap`."""
    return 0.0 if failures <= 1 else min(cap, RETRY_FIRST_SECONDS * 2.0 ** min(failures - 2, 32))


def utc_text(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
