"""Progressive delivery in the pass: a version whose contract has a `rollout` section takes live traffic as a
candidate beside the live version, and each pass looks at its figures once and steps it, promotes it or rolls
it back (`watcher.decide.progressive.judge`). The state lives in the candidate's tags (`rollout_status`,
`rollout_summary`, `rollout_step`), so a fresh CronJob process, or one after a SIGTERM, resumes the same step.

Called by `watcher.reconcile.actions` (the start, once the candidate is ready and smoke-tested, and each
`StepRollout` / `DropCandidate`), and by `python -m watcher promote|abort NAME` for a decision by a person.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal, cast

from model_wrapper.contract.rollout import Rollout
from watcher.clients.artifacts import fetch_contract
from watcher.decide.progressive import ROLLOUT_STEP, Figures, Move, Step, judge, mlflow_metrics, summary
from watcher.decide.types import STATUS, Live, VersionInfo
from watcher.errors import CandidateRejected, Permanent, Retryable
from watcher.reconcile.deps import Deps, PassReport
from watcher.reconcile.ports import RolloutTarget, Target
from watcher.render.manifests import Release

log = logging.getLogger(__name__)
Decision = Literal["promote", "abort"]


def rollout_target(target: Target) -> RolloutTarget | None:
    """The target, if it can run a candidate beside the live version (the local target can), else None."""
    return cast(RolloutTarget, target) if hasattr(target, "begin_rollout") else None


def _trials(deps: Deps) -> RolloutTarget:
    target = rollout_target(deps.target)
    if target is None:
        raise Permanent("this target runs no candidate beside the live version")
    return target


UNSUPPORTED = ("the contract's rollout section is not carried out on this target yet (only on the local "
               "target): deployed at once, without a shadow or canary")


def wants_trial(deps: Deps, rollout: Rollout | None, version: VersionInfo, previous: Live | None) -> bool:
    """A rollout needs a live version of the same model to compare with, and a target that runs candidates."""
    if rollout is None or previous is None or previous.model != version.name or previous.version is None:
        return False
    if note := _unsupported(deps):
        log.warning("%s: %s", version, note)
        return False
    return True


def unsupported_note(deps: Deps, rollout: Rollout | None) -> list[str]:
    """What `deployment_warnings` says when the section could not be followed here (empty otherwise)."""
    note = _unsupported(deps) if rollout is not None else None
    return [note] if note else []


def candidate_apart(deps: Deps) -> bool:
    """Whether the target starts a candidate itself, beside the live objects (Kubernetes), rather than taking the
    wrapper `apply` started (local)."""
    return bool(getattr(deps.target, "candidate_apart", False))


def _unsupported(deps: Deps) -> str | None:
    return UNSUPPORTED if rollout_target(deps.target) is None else None


def begin(deps: Deps, version: VersionInfo, rollout: Rollout, rendered: Any, snapshot: Any,
          previous: Live) -> None:
    """The ready candidate takes its first share of traffic (shadow: copies of a sample)."""
    analysis = rollout.analysis
    _trials(deps).begin_rollout(rendered, snapshot, _percent(rollout, 0), rollout.sample,
                                compares=analysis.min_agreement is not None or analysis.max_mean_abs_diff is not None)
    step = Step(0, deps.clock(), 0)
    deps.recorder.on_trial(version, rollout.stages[0], "starting: no figures yet", str(step), previous.version)
    log.info("%s: on trial beside version %s: %s", version, previous.version, rollout.stages[0])


def step(deps: Deps, version: VersionInfo, live: Live, report: PassReport, attempt: str,
         decision: Decision | None = None) -> str:
    """One look at a candidate's figures and what follows from them; returns what happened (for the CLI)."""
    found = fetch_contract(deps.store, deps.registry, version)
    rollout = found.contract.rollout
    snapshot = deps.target.observe()
    now = deps.clock()
    current = Step.parse(version.tags.get(ROLLOUT_STEP, "")) or Step(0, now, 0)  # a lost tag: the step again
    unseen = ""
    try:
        figures: Figures = _trials(deps).rollout_figures(live.slug, snapshot)
    except Retryable as e:  # no figures is no verdict: the step holds (a person's decision needs none)
        log.warning("%s: no figures this pass: %s", version, e)
        if decision is None:
            return _hold(deps, version, rollout, current, live, f"no figures this pass: {e}", (str(e),), report)
        figures, unseen = Figures(version.version, int(live.version or 0)), f"decided without figures ({e})"
    move = _move(rollout, current, figures, now, decision)
    agreement = found.contract.task != "regression"  # equal answers say nothing of a regression: mean |diff| does
    text = unseen or summary(figures, agreement=agreement)
    if move.kind == "hold":
        return _hold(deps, version, rollout, current, live, text, move.reasons, report)
    if not unseen:  # a person's decision taken without figures logs none (no zeros that were never read)
        deps.registry.log_rollout(version, mlflow_metrics(figures, agreement=agreement), int(now.timestamp() * 1000),
                                  current.index)
    if move.kind == "advance" and move.step is not None and rollout is not None:
        _trials(deps).split(live.slug, snapshot, _percent(rollout, move.step.index), rollout.sample)
        deps.recorder.on_trial(version, rollout.stages[move.step.index], text, str(move.step), live.version)
        log.info("%s: next step %s (%s)", version, rollout.stages[move.step.index], text)
        report.unchanged += 1
        return rollout.stages[move.step.index]
    if move.kind == "promote":
        return _promote(deps, version, live, snapshot, text, report, _rendered(deps, version, live.slug, found))
    return _reject(deps, version, live, snapshot, text, move.reasons, attempt, report)


def _hold(deps: Deps, version: VersionInfo, rollout: Rollout | None, current: Step, live: Live, text: str,
          reasons: tuple[str, ...], report: PassReport) -> str:
    stage = rollout.stages[min(current.index, len(rollout.stages) - 1)] if rollout else "promoted"
    deps.recorder.on_trial(version, stage, text, str(current), live.version)
    log.info("%s: %s, holding: %s", version, stage, "; ".join(reasons))
    report.unchanged += 1
    return f"holding: {'; '.join(reasons)}"


def _move(rollout: Rollout | None, current: Step, figures: Figures, now: datetime, decision: Decision | None) -> Move:
    if rollout is None:  # the section went (a contract re-logged in place): nothing to judge by
        return Move("promote")
    if decision == "abort":
        return Move("reject", ("aborted by a person (python -m watcher abort)",))
    return Move("promote") if decision == "promote" else judge(rollout, current, figures, now)


def drop(deps: Deps, live: Live, snapshot: Any) -> None:
    """A candidate no longer wanted: traffic back to the live version, the candidate stopped and told why."""
    _trials(deps).discard_candidate(live.slug, snapshot)
    candidate = deps.registry.get(live.model, int(live.candidate or 0))
    if candidate is not None and candidate.tags.get(STATUS) not in ("failed", "superseded"):
        deps.recorder.undeployed(Live(live.slug, live.model, candidate.version),
                                 f"Undeployed during its rollout: no longer selected; version {live.version} "
                                 "served throughout.")
    log.info("%s v%s: the candidate v%s was stopped; v%s serves", live.model, live.version, live.candidate,
             live.version)


def _rendered(deps: Deps, version: VersionInfo, slug: str, found: Any) -> Any:
    """The candidate's manifests as the live objects (what a promotion applies on Kubernetes)."""
    serving = {"serving": found.contract.serving} if found.contract.serving is not None else {}
    return deps.renderer.render(Release(name=version.name, version=version.version, source=version.source,
                                        run_id=version.run_id, slug=slug, needs=found.needs, **serving))


def _promote(deps: Deps, version: VersionInfo, live: Live, snapshot: Any, text: str, report: PassReport,
             rendered: Any) -> str:
    _trials(deps).promote(live.slug, snapshot, rendered)
    deps.recorder.rollout_ended(version, "promoted", text)
    deps.recorder.deployed(version, live.slug, fresh=True)
    old = deps.registry.get(live.model, int(live.version or 0))
    if old is not None and old.tags.get(STATUS) != "superseded":
        deps.recorder.superseded(old, version.version)
        report.superseded += 1
    report.updated += 1
    log.info("%s: promoted (%s)", version, text)
    return "promoted"


def _reject(deps: Deps, version: VersionInfo, live: Live, snapshot: Any, text: str, reasons: tuple[str, ...],
            attempt: str, report: PassReport) -> str:
    _trials(deps).discard_candidate(live.slug, snapshot)
    deps.recorder.rollout_ended(version, "rolled back", text)
    error = CandidateRejected(f"rolled back: {'; '.join(reasons)}; version {live.version} served throughout. "
                              f"Figures: {text}")
    deps.recorder.failed(version, error, attempt)
    report.failed += 1
    report.failures.append(f"{version}: {error}")
    log.warning("%s: %s", version, error)
    return "rolled back"


def _percent(rollout: Rollout, index: int) -> int:
    return rollout.steps[index] if rollout.strategy == "canary" else 0

