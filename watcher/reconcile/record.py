"""Step 6 of the pass: write the outcome on the model version, as the registry contract names it.

One `Recorder` is built per pass's collaborators (`watcher.reconcile.deps.Deps.recorder`) from what it needs:
the registry's tag calls, the target's endpoint, the clock and the back-off ceiling. Only tags whose value
changes are written, so a pass that changes nothing writes nothing. Messages are redacted and short: a
researcher reads them in the MLflow UI.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from shlex import quote

from model_wrapper.contract.spec import NEEDS_NEW_VERSION
from watcher.config.logs import redact
from watcher.decide.retry import Retrying, utc_text
from watcher.decide.selection import what_it_expects
from watcher.decide.types import ATTEMPT, STATUS, Live, Selector, VersionInfo
from watcher.errors import Blocked, PassAborted, Permanent, RolloutFailed, ServiceBuilderError
from watcher.reconcile.ports import TagStore

log = logging.getLogger(__name__)
MAX_MESSAGE = 500
WARNINGS = "deployment_warnings"
_RETRY_SAID = re.compile(r"([;,] (will retry|the next pass retries|retrying next pass|checking again next pass))+$")
"""How the errors of a retried failure end; the recorded message says when, instead."""


@dataclass(frozen=True)
class Recorder:
    """Writes a pass's outcomes on the versions; built once from the few collaborators it uses."""

    registry: TagStore
    endpoint: Callable[[str], str]
    """The target's URL for a slug."""
    clock: Callable[[], datetime]
    backoff_max_seconds: float
    """The longest pause before a version the cluster keeps failing is tried again."""

    def deploying(self, version: VersionInfo) -> None:
        self._write(version, {STATUS: "deploying", "deployment_message": "Rolling out; this tag changes when done."})

    def evaluating(self, version: VersionInfo, data: str) -> None:
        self._write(version, {STATUS: "evaluating",
                              "deployment_message": f"Evaluating on {data[:200]}; this tag changes when done."})

    def evaluated(self, version: VersionInfo, *, passed: bool, summary: str, digest: str) -> None:
        """The gate's outcome: its own tags, kept whatever the deployment does next."""
        self._write(version, {"evaluation_status": "passed" if passed else "failed",
                              "evaluation_summary": redact(summary)[:MAX_MESSAGE], "evaluation_digest": digest})

    def deployed(self, version: VersionInfo, slug: str, *, fresh: bool, warnings: list[str] | None = None) -> None:
        """Record a ready version; `deployed_at` moves only when a new rollout happened. `warnings`: the
        environment differences the wrapper reported (None when it could not be asked: the tag stays)."""
        endpoint = self.endpoint(slug)
        message = f"Serving version {version.version} at {endpoint}"
        if warnings:
            message += "; see deployment_warnings"
        tags = {"model_endpoint": endpoint, "deployed": "true", "deployment_name": slug, ATTEMPT: "",
                "deployment_message": message}
        if warnings is not None:
            tags[WARNINGS] = redact("; ".join(warnings))[:MAX_MESSAGE]
        if fresh or "deployed_at" not in version.tags:
            tags["deployed_at"] = self.clock().isoformat(timespec="seconds")
        tags[STATUS] = "deployed"  # last: whoever reacts to the status finds the endpoint already there
        self._write(version, tags)

    def on_trial(self, version: VersionInfo, stage: str, summary: str, step: str, live_version: int | None) -> None:
        """A candidate's rollout, as it stands: its stage, its figures so far and the step's bookkeeping."""
        self._write(version, {"rollout_status": stage, "rollout_summary": redact(summary)[:MAX_MESSAGE],
                              "rollout_step": step, STATUS: "deploying", "deployed": "false",
                              "deployment_message": f"Rollout: {stage} beside version {live_version}; its figures "
                                                    "are in rollout_summary; this tag changes when it is decided."})

    def rollout_ended(self, version: VersionInfo, outcome: str, summary: str) -> None:
        """`promoted` or `rolled back`, with the last figures (the deployment tags are written beside)."""
        self._write(version, {"rollout_status": outcome, "rollout_summary": redact(summary)[:MAX_MESSAGE],
                              "rollout_step": ""})

    def near_miss(self, version: VersionInfo, found: str, selector: Selector) -> bool:
        """Tell a version the selector only nearly picks what it expects; True when that was news."""
        message = (f"Not deployed: {found} looks meant for the selector {selector}, which needs "
                   f"{what_it_expects(selector)} (case and surrounding spaces count); fix it to deploy this version.")
        if version.tags.get("deployment_message") == message:
            return False
        self._write(version, {"deployment_message": message[:MAX_MESSAGE]})
        return True

    def superseded(self, version: VersionInfo, winner: int) -> None:
        """The endpoint now serves the winner, so the loser's `model_endpoint` goes: it would name the wrong model."""
        self._write(version, {STATUS: "superseded", "deployed": "false",
                              "deployment_message": f"Replaced by version {winner} of this model."})
        if "model_endpoint" in version.tags:
            self.registry.delete_tag(version, "model_endpoint")

    def undeployed(self, live: Live,
                   why: str = "Undeployed: no version of this model is selected any more.") -> None:
        """Tag what was served as undeployed, saying `why`; its endpoint no longer serves it, so the tag goes."""
        if not live.model or live.version is None:
            return
        version = self.registry.get(live.model, live.version)
        if version is None:
            log.info("%s v%s: undeployed; the version no longer exists, so there is nothing to tag",
                     live.model, live.version)
            return
        self._write(version, {STATUS: "undeployed", "deployed": "false", "deployment_message": why[:MAX_MESSAGE]})
        if "model_endpoint" in version.tags:
            self.registry.delete_tag(version, "model_endpoint")

    def failed(self, version: VersionInfo, error: ServiceBuilderError, attempt: str, *,
               back_off: bool = True) -> None:
        """Record why; a permanent failure remembers its inputs so it is not retried until they change. Any other
        is retried, after a pause that grows with each failure in a row (`back_off`; a stop or a clash retries at
        once), and the message says when."""
        remember = isinstance(error, Permanent) and not isinstance(error, Blocked)
        # A rollout fails for reasons outside the model files (its runtime, resources, the image): once
        # that is fixed, nothing about the version changed, so the researcher is told how to ask again.
        command = f"python -m watcher retry {quote(version.name)} {version.version}"
        retry = f"; once fixed: {command}" if isinstance(error, RolloutFailed) and \
            NEEDS_NEW_VERSION not in str(error) else ""  # a fix only a new version carries: retrying cannot help
        attempt_tag = attempt if remember else ""
        if not remember and back_off:
            previous = Retrying.parse(version.tags.get(ATTEMPT, "")) or Retrying(attempt, 0)
            retrying = previous.next(attempt, self.clock(), self.backoff_max_seconds)
            attempt_tag = str(retrying)
            retry = "; will retry on the next pass" if retrying.after is None else \
                f"; will retry after {utc_text(retrying.after)} (attempt {retrying.failures} failed; now: {command})"
        text = redact(_RETRY_SAID.sub("", str(error)) if retry else str(error))
        message = text[:MAX_MESSAGE - len(retry)] + retry
        tags = {STATUS: "failed", "deployment_message": message, ATTEMPT: attempt_tag}
        if version.tags.get(STATUS) != "deployed":
            tags["deployed"] = "false"
        try:
            self._write(version, tags)
        except PassAborted:
            raise
        except ServiceBuilderError as e:
            log.error("%s: could not record the failure (%s)", version, e)

    def _write(self, version: VersionInfo, tags: dict[str, str]) -> None:
        # An empty value for an absent tag says nothing new: skip it (each tag is one registry write).
        changed = {key: value for key, value in tags.items() if version.tags.get(key, "") != value or
                   (value and key not in version.tags)}
        if changed:
            self.registry.set_tags(version, changed, last=STATUS)
            if isinstance(version.tags, dict):
                version.tags.update(changed)  # later writes in this pass compare against what is now true
