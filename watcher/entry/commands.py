"""The CLI's developer commands (render, deploy, undeploy, retry, status, promote, abort), built on the pass.

Each reads like the pass it reuses; output goes to stdout for people, logs go to stderr.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from shlex import quote
from typing import Any

from model_wrapper.contract.naming import model_slug
from watcher.decide.plan import Deploy, Undeploy
from watcher.decide.types import ATTEMPT, KINDS, STATUS, Live, Selector, VersionInfo
from watcher.errors import Permanent
from watcher.reconcile import progressive
from watcher.reconcile.actions import attempt_key, perform
from watcher.reconcile.deps import Deps, PassReport
from watcher.reconcile.engine import reconcile_once, render_version

log = logging.getLogger(__name__)


def reconcile(deps: Deps, *, dry_run: bool = False, only_model: str | None = None,
              out: Callable[[str], None] = print) -> PassReport:
    return reconcile_once(deps, dry_run=dry_run, only_model=only_model, out=out)


def render(deps: Deps, name: str, version: int, out: Callable[[str], None] = print) -> int:
    out(render_version(deps, _version(deps, name, version), model_slug(name)))
    return 0


def deploy(deps: Deps, name: str, version: int, out: Callable[[str], None] = print) -> int:
    """Deploy exactly this version now, with the pass's own steps (contract, render, apply, wait, record)."""
    info = _version(deps, name, version)
    slug = model_slug(name)
    with deps.target.exclusive():
        snapshot = deps.target.observe()
        previous = next((item for item in snapshot.live() if item.slug == slug), None)
        if previous is not None and previous.model != name:
            raise Permanent(f"the name {slug!r} is already used by {previous.model or 'objects not managed by us'}")
        reason = "new" if previous is None else "update" if previous.version != version else "reconfigure"
        report = PassReport(found=1)
        perform(deps, Deploy(info, slug, reason, previous), snapshot, report)  # type: ignore[arg-type]
    if report.failed:
        out(f"{info}: failed: {report.failures[0].removeprefix(f'{info}: ')}")
        return 1
    out(f"{info}: deployed at {deps.target.endpoint(slug)}")
    _warn_unless_selected(deps, info, out)
    return 0


def _warn_unless_selected(deps: Deps, info: VersionInfo, out: Callable[[str], None]) -> None:
    """A version the selector does not pick is undone by the next pass of any running watcher: say so first."""
    selector = deps.settings.parsed_selector
    chosen = sorted(v.version for v in deps.registry.selected(selector, name=info.name) if v.name == info.name)
    if info.version in chosen and info.version == max(chosen):
        return
    instead = f"v{max(chosen)}, which the selector picks, is served" if chosen else "the model is undeployed"
    out(f"warning: {selector} does not select {info}: a running watcher's next pass will undo this deploy "
        f"({instead}); to keep {info}, select it ({_how_to_select(selector, info)})")


def _how_to_select(selector: Selector, info: VersionInfo) -> str:
    if selector.kind == "tag":
        return f"set the tag {selector.key}={selector.value} on v{info.version}"
    if selector.kind == "alias":
        return f"point the alias {selector.key} at v{info.version}"
    return f"move v{info.version} to the stage {selector.key}"


def undeploy(deps: Deps, name: str, *, untag: bool = False, out: Callable[[str], None] = print) -> int:
    """Remove the model's objects; refused while the selector still picks a version of it (the next pass
    would deploy it again), unless `untag` also removes what selects it."""
    selector = deps.settings.parsed_selector
    chosen = sorted((v for v in deps.registry.selected(selector, name=name) if v.name == name), key=lambda v: v.version)
    if chosen and not untag:
        versions = ", ".join(f"v{v.version}" for v in chosen)
        out(f"{name}: not undeployed: {selector} still selects {versions}, so the next pass would deploy it again; "
            f"remove that, or run: python -m watcher undeploy {quote(name)} --untag")
        return 1
    why = "Undeployed: no version of this model is selected any more."
    if chosen:
        for version in chosen:
            deps.registry.unselect(version, selector)
        why = f"Undeployed by `python -m watcher undeploy --untag`, which removed {selector} from this version."
    slug = model_slug(name)
    with deps.target.exclusive():
        snapshot = deps.target.observe()
        live = next((item for item in snapshot.live() if item.slug == slug and item.model == name), None)
        report = PassReport()
        if live is not None:
            perform(deps, Undeploy(live, retag=False), snapshot, report)
    if report.failed:
        out(f"{name}: {report.failures[0].removeprefix(f'{name}: ')}")
        return 1
    for version in chosen:  # selected, yet not what ran (a failed newer version, say): no longer selected either
        if live is None or version.version != live.version:
            deps.recorder.undeployed(Live(slug, name, version.version), why)
    if live is not None:
        deps.recorder.undeployed(live, why)
    untagged = f" ({selector} removed from {', '.join(f'v{v.version}' for v in chosen)})" if chosen else ""
    out(f"{name}: undeployed{untagged}" if live is not None else f"{name}: not deployed{untagged}")
    return 0


def retry(deps: Deps, name: str, version: int | None = None, out: Callable[[str], None] = print) -> int:
    """Forget a remembered failure (of `version`, or of every failed version of the model), then run a
    pass over the model: for failures whose cause was fixed outside the version (a runtime, a limit)."""
    versions = [_version(deps, name, version)] if version is not None else deps.registry.with_status(name, "failed")
    failed = [v for v in versions if v.tags.get(STATUS) == "failed"]
    if not versions and not deps.registry.has_model(name):
        raise Permanent(f"{name}: no registered model of this name in the registry")
    if not failed:
        state = versions[0].tags.get(STATUS, "not deployed yet") if versions else "no failed version"
        out(f"{name}{f' v{version}' if version is not None else ''}: nothing to retry ({state})")
        return 0
    for info in failed:
        deps.registry.delete_tag(info, ATTEMPT)
    report = reconcile_once(deps, only_model=name, out=out)
    code = 0
    for info in failed:
        after = deps.registry.get(info.name, info.version)
        tags = after.tags if after else {}
        if tags.get(STATUS) == "failed":
            code = 1
        elif report.skipped:
            tags = {STATUS: "retry pending", "deployment_message": report.skipped}
        out(f"{info}: {tags.get(STATUS, 'not selected')}: {tags.get('deployment_message', '')}".rstrip(": "))
    return code


def decide_rollout(deps: Deps, name: str, decision: progressive.Decision, out: Callable[[str], None] = print) -> int:
    """`promote NAME` / `abort NAME`: a person decides the model's rollout now, on the figures so far."""
    slug = model_slug(name)
    with deps.target.exclusive():
        live = next((item for item in deps.target.observe().live() if item.slug == slug and item.model == name), None)
        if live is None or live.candidate is None:
            out(f"{name}: no rollout in progress (a version whose contract has a rollout section, on trial beside "
                "the live one)")
            return 1
        version = _version(deps, name, live.candidate)
        outcome = progressive.step(deps, version, live, PassReport(), attempt_key(deps, version), decision)
    out(f"{version}: {outcome}; version {version.version if outcome == 'promoted' else live.version} serves")
    return 0


def status(deps: Deps, *, as_json: bool = False, out: Callable[[str], None] = print) -> int:
    """Every version the watcher knows of (selected, or running), with its status and message."""
    state_dir = deps.settings.local_state_dir
    if deps.settings.deploy_target == "local" and not state_dir.is_dir():
        log.warning("no local state at %s (LOCAL_STATE_DIR): no wrapper process is known to be running here; "
                    "`make up` prints the LOCAL_STATE_DIR of its watcher", state_dir.resolve())
    rows = version_states(deps)
    if as_json:
        out(json.dumps(rows, indent=2))
        return 0
    table = [("MODEL", "VERSION", "STATUS", "ENDPOINT", "MESSAGE")]
    for row in rows:
        note = row["warnings"] if row["status"] == "deployed" else row["message"]
        table.append((row["model"], str(row["version"]), row["status"], row["endpoint"] or "-", _short(note)))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for line in table:
        out("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def version_states(deps: Deps) -> list[dict[str, Any]]:
    """One record per selected or running version: what `status` shows (read-only)."""
    running = {(item.model, item.version): item for item in deps.target.observe().live() if item.managed}
    known = {(v.name, v.version): v for v in deps.registry.selected(deps.settings.parsed_selector)}
    for model, number in running.keys() - known.keys():
        found = deps.registry.get(model, number) if number is not None else None
        known[(model, number or 0)] = found or VersionInfo(model, number or 0, "", None, {STATUS: "version deleted"})
    rows = []
    for (model, number), info in sorted(known.items()):
        live = running.get((model, number))
        state = info.tags.get(STATUS, "pending")
        if live is not None and not live.kinds >= KINDS:
            state = f"{state} (incomplete)"
        trial = info.tags.get("rollout_status", "") if state == "deploying" else ""  # a candidate on trial
        message = info.tags.get("rollout_summary" if trial else "deployment_message", "")
        rows.append({"model": model, "version": number, "status": f"{state} ({trial})" if trial else state,
                     "running": live is not None,
                     "endpoint": deps.target.endpoint(live.slug) if live else info.tags.get("model_endpoint", ""),
                     "message": message, "warnings": info.tags.get("deployment_warnings", ""),
                     "rollout": info.tags.get("rollout_status", ""),
                     "rollout_summary": info.tags.get("rollout_summary", "")})
    return rows


def drift(deps: Deps, name: str, version: int | None = None, *, since: str = "24h", until: str | None = None,
          out: Callable[[str], None] = print) -> int:
    """Measure the drift of `version` (default: the deployed one) over the window; tag, log and print it."""
    from watcher.reconcile.drift import as_utc, measure, parse_since

    try:
        window, end = parse_since(since), as_utc(until) if until else None
    except ValueError as e:
        raise Permanent(str(e)) from None
    if version is not None:
        info = _version(deps, name, version)
    else:
        deployed = deps.registry.with_status(name, "deployed")
        if not deployed:
            raise Permanent(f"{name} has no deployed version; name the version to measure")
        info = max(deployed, key=lambda v: v.version)
    measured = measure(deps, info, since=window, until=end)
    out(f"{info}: {measured.outcome.status or 'not judged'}: {measured.outcome.summary}")
    for feature in measured.outcome.drifted:
        out(f"  drifted: {feature.name} (PSI {feature.psi:.2f})")
    return 0


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _version(deps: Deps, name: str, version: int) -> VersionInfo:
    info = deps.registry.get(name, version)
    if info is None:
        raise Permanent(f"{name} v{version} does not exist in the registry")
    return info
