"""One reconcile pass: find → decide → fetch → evaluate → render → apply → record. Called by every trigger.

`reconcile_once` does exactly one pass and returns a `PassReport`; the CronJob, the `watch` loop,
the webhook receiver and the CLI all go through it. A failure in one model is recorded on that
model and the pass goes on; only an unreachable registry or cluster aborts the pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

import yaml

from model_wrapper.contract.naming import model_slug
from watcher.clients.artifacts import fetch_contract
from watcher.decide.plan import (
    Action,
    Deploy,
    DropCandidate,
    Plan,
    RecordDeployed,
    RollBack,
    StepRollout,
    Supersede,
    Undeploy,
    plan,
)
from watcher.decide.types import Live, NearMiss, VersionInfo
from watcher.errors import Busy, ServiceBuilderError
from watcher.reconcile.actions import attempt_key, perform, release_of
from watcher.reconcile.deps import Deps, PassReport

log = logging.getLogger(__name__)


def reconcile_once(deps: Deps, *, dry_run: bool = False, only_model: str | None = None,
                   out: Callable[[str], None] = print, eager: Collection[str] = ()) -> PassReport:
    """One pass. Raises PassAborted only when the registry or the cluster cannot be reached. `eager`: models
    a webhook just asked for, retried at once even while a failure's pause runs."""
    started = deps.monotonic()
    report = PassReport()
    eager = frozenset(eager) | ({only_model} if only_model else set())
    the_plan, snapshot, near = _decide(deps, only_model, eager)
    report.found, report.unchanged = the_plan.found, len(the_plan.unchanged)
    if dry_run:
        _print_plan(deps, the_plan, out)
        for miss in near:
            out(f"- near miss, not deployed: {miss.version}: {miss.found}")
    else:
        _tell(deps, near)
    if not dry_run and the_plan.actions:
        try:
            with deps.target.exclusive():
                # Re-read under the lease: another watcher may have acted since we looked.
                the_plan, snapshot, _ = _decide(deps, only_model, eager)
                report.unchanged = len(the_plan.unchanged)
                for action in the_plan.actions:
                    if deps.stop_requested():
                        log.warning("stop requested: leaving the remaining actions to the next pass")
                        break
                    if isinstance(action, Deploy) and _out_of_time(deps, started):
                        log.warning("%s: left to the next pass: less than one model's worst case (%.0f s) is left "
                                    "of PASS_DEADLINE_SECONDS", action.version, deps.settings.model_worst_case_seconds)
                        report.deferred += 1
                        continue
                    deps.progress()
                    perform(deps, action, snapshot, report)
        except Busy as e:
            report.skipped = str(e)
    report.seconds = deps.monotonic() - started
    log.info("%s", report.summary())
    return report


def _out_of_time(deps: Deps, started: float) -> bool:
    """A deployment started now could outlast the pass's deadline (PASS_DEADLINE_SECONDS), where there is one:
    the CronJob would kill the pass mid-way, and the next one would start that model over."""
    deadline = deps.settings.pass_deadline_seconds
    return deadline is not None and deps.monotonic() - started + deps.settings.model_worst_case_seconds > deadline


def _tell(deps: Deps, near: list[NearMiss]) -> None:
    """A version whose tag or alias only nearly matches the selector is told so, once, and never deployed."""
    for miss in near:
        if deps.recorder.near_miss(miss.version, miss.found, deps.settings.parsed_selector):
            log.warning("%s: not deployed: %s only nearly matches %s (case and surrounding spaces count)",
                        miss.version, miss.found, deps.settings.parsed_selector)


def _decide(deps: Deps, only_model: str | None, eager: frozenset[str]) -> tuple[Plan, Any, list[NearMiss]]:
    selected, near = deps.registry.find(deps.settings.parsed_selector, name=only_model)
    snapshot = deps.target.observe()
    live = snapshot.live()
    if only_model is not None:
        selected = [v for v in selected if v.name == only_model]
        live = [item for item in live if item.model == only_model or item.slug == model_slug(only_model)]
    return plan(selected, live, slug_of=model_slug, spec_hash_of=lambda v, item: _spec_hash(deps, v, item),
                attempt_of=lambda v: attempt_key(deps, v),
                kinds_of=lambda v, item: deps.renderer.kinds(release_of(v, item.slug, item.serving)),
                now=deps.clock(), eager=eager), snapshot, near


def _spec_hash(deps: Deps, version: VersionInfo, live: Live) -> str:
    """What the live model's hash would be now: its own when the inputs are the same, else rendered anew."""
    release = release_of(version, live.slug, live.serving, live.needs)
    if live.inputs_digest and live.inputs_digest == deps.renderer.inputs_digest(release):
        return live.spec_hash
    return deps.renderer.render(release, validate=False).spec_hash


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
    rendered = deps.renderer.render(release_of(version, slug, found.contract.serving, found.needs))
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
    if isinstance(action, StepRollout):
        return f"look at the rollout of {action.version} beside v{action.live.version}"
    if isinstance(action, DropCandidate):
        return f"stop the candidate v{action.live.candidate} of {action.live.model}; v{action.live.version} serves"
    if isinstance(action, RollBack):
        return f"finish the roll-back of {action.version} to v{action.live.rollback_to}"
    return f"clash: {action.version}: {action.message}"
