"""One reconcile pass: find → decide → fetch → evaluate → render → apply → record. Called by every trigger.

`reconcile_once` does exactly one pass and returns a `PassReport`; the CronJob, the `watch` loop,
the webhook receiver and the CLI all go through it. A failure in one model is recorded on that
model and the pass goes on; only an unreachable registry or cluster aborts the pass.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import yaml

from model_wrapper.contract.naming import model_slug
from watcher.clients.artifacts import S3Store, fetch_contract
from watcher.clients.registry import Registry, VersionInfo
from watcher.clients.smoke import environment_warnings, smoke_test, smoke_test_invocations
from watcher.config.logs import about
from watcher.config.settings import Settings
from watcher.decide.plan import (
    STATUS,
    Action,
    Clash,
    Deploy,
    Live,
    Plan,
    RecordDeployed,
    RollBack,
    Supersede,
    Undeploy,
    plan,
)
from watcher.errors import Blocked, PassAborted, Retryable, RolloutFailed, ServiceBuilderError, Stopping
from watcher.reconcile import record
from watcher.reconcile.gate import evaluate_before_rollout
from watcher.render.manifests import Release, Rendered, Renderer
from watcher.targets.kubernetes.lease import Busy

log = logging.getLogger(__name__)


class Snapshot(Protocol):
    def live(self) -> list[Live]: ...


class Target(Protocol):
    """Where models run (Kubernetes or local processes); see watcher.targets.kubernetes.cluster and .local."""

    def observe(self) -> Any: ...
    def apply(self, rendered: Rendered, snapshot: Any) -> None: ...
    def wait_ready(self, rendered: Rendered, timeout: float) -> None: ...
    def finish(self, rendered: Rendered, snapshot: Any) -> None: ...
    def roll_back(self, rendered: Rendered, snapshot: Any) -> None: ...
    def evaluate(self, job: dict[str, Any], timeout: float) -> str: ...
    def remove(self, slug: str, snapshot: Any) -> None: ...
    def exclusive(self) -> Any: ...
    def endpoint(self, slug: str) -> str: ...
    def smoke_base(self, slug: str) -> str | None: ...


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


@dataclass
class PassReport:
    found: int = 0
    deployed: int = 0
    updated: int = 0
    unchanged: int = 0
    superseded: int = 0
    undeployed: int = 0
    failed: int = 0
    seconds: float = 0.0
    skipped: str = ""
    """Why the pass did nothing (another watcher held the lease), else empty."""
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = ("found", "deployed", "updated", "unchanged", "superseded", "undeployed", "failed")
        text = " ".join(f"{name}={getattr(self, name)}" for name in counts)
        return f"pass done: {text} duration={self.seconds:.2f}s" + (f" skipped: {self.skipped}" if self.skipped else "")


def reconcile_once(deps: Deps, *, dry_run: bool = False, only_model: str | None = None,
                   out: Callable[[str], None] = print, eager: Collection[str] = ()) -> PassReport:
    """One pass. Raises PassAborted only when the registry or the cluster cannot be reached. `eager`: models
    a webhook just asked for, retried at once even while a failure's pause runs."""
    started = time.monotonic()
    report = PassReport()
    eager = frozenset(eager) | ({only_model} if only_model else set())
    the_plan, snapshot = _decide(deps, only_model, eager)
    report.found, report.unchanged = the_plan.found, len(the_plan.unchanged)
    if dry_run:
        _print_plan(deps, the_plan, out)
    elif the_plan.actions:
        try:
            with deps.target.exclusive():
                # Re-read under the lease: another watcher may have acted since we looked.
                the_plan, snapshot = _decide(deps, only_model, eager)
                report.unchanged = len(the_plan.unchanged)
                for action in the_plan.actions:
                    if deps.stop_requested():
                        log.warning("stop requested: leaving the remaining actions to the next pass")
                        break
                    deps.progress()
                    _perform(deps, action, snapshot, report)
        except Busy as e:
            report.skipped = str(e)
    report.seconds = time.monotonic() - started
    log.info("%s", report.summary())
    return report


def _decide(deps: Deps, only_model: str | None, eager: frozenset[str]) -> tuple[Plan, Any]:
    selected = deps.registry.selected(deps.settings.parsed_selector, name=only_model)
    snapshot = deps.target.observe()
    live = snapshot.live()
    if only_model is not None:
        selected = [v for v in selected if v.name == only_model]
        live = [item for item in live if item.model == only_model or item.slug == model_slug(only_model)]
    return plan(selected, live, slug_of=model_slug, spec_hash_of=lambda v, item: _spec_hash(deps, v, item),
                attempt_of=lambda v: attempt_key(deps, v),
                kinds_of=lambda v, item: deps.renderer.kinds(_release(v, item.slug, item.serving)),
                now=deps.clock(), eager=eager), snapshot


def _spec_hash(deps: Deps, version: VersionInfo, live: Live) -> str:
    """What the live model's hash would be now: its own when the inputs are the same, else rendered anew."""
    release = _release(version, live.slug, live.serving, live.needs)
    if live.inputs_digest and live.inputs_digest == deps.renderer.inputs_digest(release):
        return live.spec_hash
    return deps.renderer.render(release, validate=False).spec_hash


def attempt_key(deps: Deps, version: VersionInfo) -> str:
    """Identifies one attempt's inputs: a permanent failure is not retried until one of these changes."""
    text = "|".join([version.name, str(version.version), version.source, version.run_id or "",
                     deps.settings.fingerprint(), deps.renderer.templates_digest])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _release(version: VersionInfo, slug: str, serving: Any = None, needs: tuple[str, ...] = ()) -> Release:
    kwargs = {"serving": serving} if serving is not None else {}
    return Release(name=version.name, version=version.version, source=version.source, run_id=version.run_id,
                   slug=slug, needs=needs, **kwargs)


def _perform(deps: Deps, action: Action, snapshot: Any, report: PassReport) -> None:
    if isinstance(action, Undeploy):
        model, version = action.live.model or action.live.slug, action.live.version
    else:
        model, version = action.version.name, action.version.version
    with about(model, version):
        _act(deps, action, snapshot, report)


def _act(deps: Deps, action: Action, snapshot: Any, report: PassReport) -> None:
    subject = action.live.model if isinstance(action, Undeploy) else str(action.version)
    try:
        if isinstance(action, Deploy):
            _deploy(deps, action, snapshot, report)
        elif isinstance(action, RecordDeployed):
            _record_running(deps, action)
            report.unchanged += 1
        elif isinstance(action, RollBack):
            _finish_roll_back(deps, action)
            report.unchanged += 1
        elif isinstance(action, Supersede):
            record.superseded(deps, action.version, action.winner)
            report.superseded += 1
        elif isinstance(action, Undeploy):
            deps.target.remove(action.live.slug, snapshot)
            if action.retag:
                record.undeployed(deps, action.live)
            report.undeployed += 1
        elif isinstance(action, Clash):
            raise Blocked(action.message)  # the plan re-checks the clash every pass
    except PassAborted:
        raise  # the registry or the cluster is gone: no model failed, the pass did
    except Stopping:
        if isinstance(action, Deploy) and action.reason in ("new", "update"):  # never left `deploying`
            record.failed(deps, action.version, Retryable(
                "stopped by a signal during the rollout; what ran before was put back, the next pass retries"),
                attempt_key(deps, action.version), back_off=False)
        raise
    except Exception as error:  # one model's failure, whatever it is, never stops the pass for the others
        e = error if isinstance(error, ServiceBuilderError) else _unexpected(subject, error)
        report.failed += 1
        report.failures.append(f"{subject}: {e}")
        log.error("%s: %s", subject, e)
        if not isinstance(action, Undeploy | RollBack):  # a roll-back that failed again leaves the tags as they are
            # A clash is re-checked by the plan every pass at no cost: no pause, and no count to rewrite.
            record.failed(deps, action.version, e, attempt_key(deps, action.version),
                          back_off=not isinstance(action, Clash))


def _unexpected(subject: str, error: Exception) -> Retryable:
    """A bug, or input nobody foresaw: logged with its traceback, tagged without it, tried again next pass."""
    log.error("%s: unexpected %s", subject, type(error).__name__, exc_info=error)
    return Retryable(f"the watcher failed unexpectedly ({type(error).__name__}); its log has the details")


def _record_running(deps: Deps, action: RecordDeployed) -> None:
    """Tags that fell behind a running version are rewritten once it answers; not yet ready is not a verdict."""
    rendered = deps.renderer.render(_release(action.version, action.live.slug, action.live.serving,
                                             action.live.needs))
    try:
        deps.target.wait_ready(rendered, min(30.0, deps.settings.rollout_timeout_seconds))
    except (RolloutFailed, Retryable) as e:
        raise Retryable(f"{e}; checking again next pass") from e
    record.deployed(deps, action.version, action.live.slug, fresh=False)


def _deploy(deps: Deps, action: Deploy, snapshot: Any, report: PassReport) -> None:
    version, settings = action.version, deps.settings
    log.info("%s: %s deploy as %s", version, action.reason, action.slug)
    found = fetch_contract(deps.store, deps.registry, version)
    rendered = deps.renderer.render(_release(version, action.slug, found.contract.serving, found.needs))
    warnings: list[str] | None = None
    if action.evaluates:
        evaluate_before_rollout(deps, version, found, rendered, action.previous)
        record.deploying(deps, version)
    with _rolled_back_on_failure(deps, rendered, snapshot, action.previous):
        deps.target.apply(rendered, snapshot)
        deps.target.wait_ready(rendered, settings.rollout_timeout_seconds)
        base = deps.target.smoke_base(action.slug)
        if base and found.contract.examples:
            smoke_test(base, found.contract.examples, retry_for=settings.smoke_test_seconds)
        elif base and found.serving_example is not None:
            smoke_test_invocations(base, found.serving_example, retry_for=settings.smoke_test_seconds)
        elif base:
            log.info("%s: no examples to smoke-test %s with; the wrapper's readiness stands for it", version,
                     action.slug)
        if base:
            warnings = environment_warnings(base)
    deps.target.finish(rendered, snapshot)
    record.deployed(deps, version, action.slug, fresh=action.reason in ("new", "update"), warnings=warnings)
    _supersede_previous(deps, action, report)
    if action.reason == "new":
        report.deployed += 1
    else:
        report.updated += 1
    log.info("%s: %s at %s", version, "deployed", deps.target.endpoint(action.slug))


def _finish_roll_back(deps: Deps, action: RollBack) -> None:
    """Put the version that serves back into the template after a roll-back was cut short; it stays deployed."""
    serving = deps.registry.get(action.version.name, int(action.live.rollback_to or 0))
    if serving is None:
        raise Retryable(f"version {action.live.rollback_to} is gone from the registry: nothing to roll back to")
    log.info("%s: finishing the roll-back to version %s", action.version, serving.version)
    found = fetch_contract(deps.store, deps.registry, serving)
    rendered = deps.renderer.render(_release(serving, action.live.slug, found.contract.serving))
    snapshot = deps.target.observe()
    deps.target.apply(rendered, snapshot)
    deps.target.wait_ready(rendered, deps.settings.rollout_timeout_seconds)
    deps.target.finish(rendered, snapshot)
    record.deployed(deps, serving, action.live.slug, fresh=False)


def _supersede_previous(deps: Deps, action: Deploy, report: PassReport) -> None:
    """Now that the new version is ready, tag the one it replaced (read first: only changed tags are written)."""
    previous, winner = action.previous, action.version
    if previous is None or previous.model != winner.name or previous.version in (None, winner.version):
        return
    old = deps.registry.get(winner.name, int(previous.version or 0))
    if old is not None and old.tags.get(STATUS) != "superseded":
        record.superseded(deps, old, winner.version)
        report.superseded += 1


@contextmanager
def _rolled_back_on_failure(deps: Deps, rendered: Rendered, snapshot: Any, previous: Live | None) -> Iterator[None]:
    """Put back what ran before; a rollout failure then also says what serves now (read by the researcher)."""
    try:
        yield
    except BaseException as failure:
        if _roll_back(deps, rendered, snapshot) and isinstance(failure, RolloutFailed):
            now = f"version {previous.version} keeps serving" if previous else "nothing of it was left running"
            raise RolloutFailed(f"{failure}; {now}") from failure
        raise


def _roll_back(deps: Deps, rendered: Rendered, snapshot: Any) -> bool:
    try:
        deps.target.roll_back(rendered, snapshot)
        return True
    except ServiceBuilderError as e:
        log.error("%s: roll-back incomplete (%s); the next pass converges", rendered.release, e)
        return False


def _print_plan(deps: Deps, the_plan: Plan, out: Callable[[str], None]) -> None:
    if not the_plan.actions:
        out("nothing to do")
    for action in the_plan.actions:
        out(f"- {describe(action)}")
        if isinstance(action, Deploy):
            try:
                out(render_version(deps, action.version, action.slug))
            except ServiceBuilderError as e:
                out(f"  would fail: {e}")


def render_version(deps: Deps, version: VersionInfo, slug: str) -> str:
    """The validated manifests for one version, as YAML (reads its contract; writes nothing)."""
    found = fetch_contract(deps.store, deps.registry, version)
    rendered = deps.renderer.render(_release(version, slug, found.contract.serving, found.needs))
    return yaml.safe_dump_all(rendered.manifests, sort_keys=False)


def describe(action: Action) -> str:
    if isinstance(action, Deploy):
        return f"{action.reason}: {action.version} as {action.slug}"
    if isinstance(action, RecordDeployed):
        return f"record deployed: {action.version}"
    if isinstance(action, Supersede):
        return f"supersede: {action.version} (v{action.winner} wins)"
    if isinstance(action, Undeploy):
        return f"undeploy: {action.live.model or action.live.slug} v{action.live.version}"
    if isinstance(action, RollBack):
        return f"finish the roll-back of {action.version} to v{action.live.rollback_to}"
    return f"clash: {action.version}: {action.message}"
