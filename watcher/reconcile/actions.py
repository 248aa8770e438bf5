"""The doing half of the pass: perform one planned action (deploy, record, supersede, undeploy, finish a
roll-back) against the target and the registry, and record its outcome on the version.

Called by `watcher.reconcile.engine.reconcile_once` for each action of the plan, and by the developer
commands (`watcher.entry.commands`) that act on one model outside a pass. A failure in one model is
recorded on that model; only PassAborted (registry or cluster unreachable) and Stopping leave.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from watcher.clients.artifacts import fetch_contract
from watcher.clients.smoke import environment_warnings, smoke_test, smoke_test_invocations
from watcher.config.logs import about
from watcher.decide.plan import (
    Action,
    Clash,
    Deploy,
    DropCandidate,
    RecordDeployed,
    RollBack,
    StepRollout,
    Supersede,
    Undeploy,
)
from watcher.decide.types import STATUS, Live, VersionInfo
from watcher.errors import Blocked, PassAborted, Permanent, Retryable, RolloutFailed, ServiceBuilderError, Stopping
from watcher.reconcile import progressive
from watcher.reconcile.deps import Deps, PassReport
from watcher.reconcile.gate import Scratch
from watcher.render.manifests import Release, Rendered

log = logging.getLogger(__name__)


def attempt_key(deps: Deps, version: VersionInfo) -> str:
    """Identifies one attempt's inputs: a permanent failure is not retried until one of these changes."""
    text = "|".join([version.name, str(version.version), version.source, version.run_id or "",
                     deps.settings.fingerprint(), deps.renderer.templates_digest])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def release_of(version: VersionInfo, slug: str, serving: Any = None, needs: tuple[str, ...] = ()) -> Release:
    kwargs = {"serving": serving} if serving is not None else {}
    return Release(name=version.name, version=version.version, source=version.source, run_id=version.run_id,
                   slug=slug, needs=needs, **kwargs)


def perform(deps: Deps, action: Action, snapshot: Any, report: PassReport) -> None:
    if isinstance(action, Undeploy | DropCandidate):
        model, version = action.live.model or action.live.slug, action.live.version
    else:
        model, version = action.version.name, action.version.version
    with about(model, version):
        _act(deps, action, snapshot, report)


def _act(deps: Deps, action: Action, snapshot: Any, report: PassReport) -> None:
    subject = action.live.model if isinstance(action, Undeploy | DropCandidate) else str(action.version)
    try:
        if isinstance(action, Deploy):
            _deploy(deps, action, snapshot, report)
        elif isinstance(action, RecordDeployed):
            _record_running(deps, action)
            report.unchanged += 1
        elif isinstance(action, RollBack):
            _finish_roll_back(deps, action)
            report.unchanged += 1
        elif isinstance(action, StepRollout):
            progressive.step(deps, action.version, action.live, report, attempt_key(deps, action.version))
        elif isinstance(action, DropCandidate):
            progressive.drop(deps, action.live, snapshot)
            report.unchanged += 1
        elif isinstance(action, Supersede):
            deps.recorder.superseded(action.version, action.winner)
            report.superseded += 1
        elif isinstance(action, Undeploy):
            deps.target.remove(action.live.slug, snapshot)
            log.info("undeployed %s v%s (%s): %s", action.live.model or "objects", action.live.version,
                     action.live.slug, _why_undeployed(deps, action))
            if action.retag:
                deps.recorder.undeployed(action.live)
                if action.live.candidate is not None:  # its version on trial went with it
                    deps.recorder.undeployed(Live(action.live.slug, action.live.model, action.live.candidate))
            report.undeployed += 1
        elif isinstance(action, Clash):
            raise Blocked(action.message)  # the plan re-checks the clash every pass
    except PassAborted:
        raise  # the registry or the cluster is gone: no model failed, the pass did
    except Stopping:
        if isinstance(action, Deploy) and action.reason in ("new", "update"):  # never left `deploying`
            deps.recorder.failed(action.version, Retryable(
                "stopped by a signal during the rollout; what ran before was put back, the next pass retries"),
                attempt_key(deps, action.version), back_off=False)
        raise
    except Exception as error:  # one model's failure, whatever it is, never stops the pass for the others
        e = error if isinstance(error, ServiceBuilderError) else _unexpected(subject, error)
        report.failed += 1
        report.failures.append(f"{subject}: {e}")
        log.error("%s: %s", subject, e)
        # A roll-back (or a candidate's stop) that failed again leaves the tags as they are.
        if not isinstance(action, Undeploy | RollBack | DropCandidate):
            # A clash is re-checked by the plan every pass at no cost: no pause, and no count to rewrite.
            deps.recorder.failed(action.version, e, attempt_key(deps, action.version),
                          back_off=not isinstance(action, Clash))


def _why_undeployed(deps: Deps, action: Undeploy) -> str:
    if not action.retag:
        return "the model is served under another name now"
    return (f"{deps.settings.parsed_selector} selects no version of it any more (a deploy by hand of a version the "
            "selector does not pick is undone this way)")


def _unexpected(subject: str, error: Exception) -> Retryable:
    """A bug, or input nobody foresaw: logged with its traceback, tagged without it, tried again next pass."""
    log.error("%s: unexpected %s", subject, type(error).__name__, exc_info=error)
    return Retryable(f"the watcher failed unexpectedly ({type(error).__name__}); its log has the details")


def _record_running(deps: Deps, action: RecordDeployed) -> None:
    """Tags that fell behind a running version are rewritten once it answers; not yet ready is not a verdict."""
    rendered = deps.renderer.render(release_of(action.version, action.live.slug, action.live.serving,
                                             action.live.needs))
    try:
        deps.target.wait_ready(rendered, min(30.0, deps.settings.rollout_timeout_seconds))
    except (RolloutFailed, Retryable) as e:
        raise Retryable(f"{e}; checking again next pass") from e
    deps.recorder.deployed(action.version, action.live.slug, fresh=False)


def _deploy(deps: Deps, action: Deploy, snapshot: Any, report: PassReport) -> None:
    version = action.version
    log.info("%s: %s deploy as %s", version, action.reason, action.slug)
    found = fetch_contract(deps.store, deps.registry, version)
    release = release_of(version, action.slug, found.contract.serving, found.needs)
    scratch = _check_scratch_space(deps, version, release) if deps.settings.deploy_target == "kubernetes" else None
    rendered = deps.renderer.render(release)
    if action.evaluates:
        deps.gate.before_rollout(version, found, rendered, action.previous, scratch=scratch)
        deps.recorder.deploying(version)
    trial = action.reason == "update" and progressive.wants_trial(deps, found.contract.rollout, version,
                                                                  action.previous)
    if trial and progressive.candidate_apart(deps) and found.contract.rollout and action.previous is not None:
        # The live objects stay as they are: the candidate's own start, and its undoing on failure, are the target's.
        progressive.begin(deps, version, found.contract.rollout, rendered, snapshot, action.previous)
        report.updated += 1
        return
    with _rolled_back_on_failure(deps, rendered, snapshot, action.previous):
        warnings = _start_and_check(deps, action, found, rendered, snapshot)
    if trial and found.contract.rollout is not None and action.previous is not None:
        progressive.begin(deps, version, found.contract.rollout, rendered, snapshot, action.previous)
        report.updated += 1
        return
    deps.target.finish(rendered, snapshot)
    if action.reason == "update" and (note := progressive.unsupported_note(deps, found.contract.rollout)):
        warnings = [*(warnings or []), *note]
    deps.recorder.deployed(version, action.slug, fresh=action.reason in ("new", "update"), warnings=warnings)
    _supersede_previous(deps, action, report)
    if action.reason == "new":
        report.deployed += 1
    else:
        report.updated += 1
    log.info("%s: %s at %s", version, "deployed", deps.target.endpoint(action.slug))


def _start_and_check(deps: Deps, action: Deploy, found: Any, rendered: Rendered, snapshot: Any) -> list[str] | None:
    """Start the version's wrapper, wait until it is ready and smoke-test it; its environment warnings."""
    settings = deps.settings
    deps.target.apply(rendered, snapshot)
    deps.target.wait_ready(rendered, settings.rollout_timeout_seconds)
    base = deps.target.smoke_base(action.slug)
    if base and found.contract.examples:
        smoke_test(base, found.contract.examples, retry_for=settings.smoke_test_seconds)
    elif base and found.serving_example is not None:
        smoke_test_invocations(base, found.serving_example, retry_for=settings.smoke_test_seconds)
    elif base:
        log.info("%s: no examples to smoke-test %s with; the wrapper's readiness stands for it", action.version,
                 action.slug)
    return environment_warnings(base) if base else None


def _check_scratch_space(deps: Deps, version: VersionInfo, release: Release) -> Scratch:
    """A model larger than its pod's scratch space would fill it while downloading: the kubelet evicts the pod
    and the ReplicaSet starts another, for ever. Refused before anything is applied, saying what to raise."""
    model_uri = deps.registry.artifact_uri(version)
    scratch = Scratch(model_uri, deps.store.folder_bytes(model_uri), deps.renderer.scratch_bytes(release),
                      deps.renderer.scratch_size(release))
    if scratch.model_bytes > scratch.room:
        raise Permanent(scratch.too_small("the model's files are", scratch.model_bytes))
    return scratch


def _finish_roll_back(deps: Deps, action: RollBack) -> None:
    """Put the version that serves back into the template after a roll-back was cut short; it stays deployed."""
    serving = deps.registry.get(action.version.name, int(action.live.rollback_to or 0))
    if serving is None:
        raise Retryable(f"version {action.live.rollback_to} is gone from the registry: nothing to roll back to")
    log.info("%s: finishing the roll-back to version %s", action.version, serving.version)
    found = fetch_contract(deps.store, deps.registry, serving)
    rendered = deps.renderer.render(release_of(serving, action.live.slug, found.contract.serving))
    snapshot = deps.target.observe()
    deps.target.apply(rendered, snapshot)
    deps.target.wait_ready(rendered, deps.settings.rollout_timeout_seconds)
    deps.target.finish(rendered, snapshot)
    deps.recorder.deployed(serving, action.live.slug, fresh=False)


def _supersede_previous(deps: Deps, action: Deploy, report: PassReport) -> None:
    """Now that the new version is ready, tag the one it replaced (read first: only changed tags are written)."""
    previous, winner = action.previous, action.version
    if previous is None or previous.model != winner.name or previous.version in (None, winner.version):
        return
    old = deps.registry.get(winner.name, int(previous.version or 0))
    if old is not None and old.tags.get(STATUS) != "superseded":
        deps.recorder.superseded(old, winner.version)
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
