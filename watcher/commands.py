"""The CLI's developer commands (render, deploy, undeploy, status), built on the reconcile pass.

Each reads like the pass it reuses; output goes to stdout for people, logs go to stderr.
"""

from __future__ import annotations

from collections.abc import Callable

from model_wrapper.naming import model_slug
from watcher.errors import Permanent
from watcher.plan import Deploy, Undeploy
from watcher.reconcile import Deps, PassReport, _perform, reconcile_once, render_version
from watcher.registry import VersionInfo


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
        _perform(deps, Deploy(info, slug, reason, previous), snapshot, report)  # type: ignore[arg-type]
    if report.failed:
        out(f"{info}: failed: {report.failures[0]}")
        return 1
    out(f"{info}: deployed at {deps.target.endpoint(slug)}")
    return 0


def undeploy(deps: Deps, name: str, out: Callable[[str], None] = print) -> int:
    slug = model_slug(name)
    with deps.target.exclusive():
        snapshot = deps.target.observe()
        live = next((item for item in snapshot.live() if item.slug == slug and item.model == name), None)
        if live is None:
            out(f"{name}: not deployed")
            return 0
        report = PassReport()
        _perform(deps, Undeploy(live), snapshot, report)
    out(f"{name}: undeployed" if not report.failed else f"{name}: {report.failures[0]}")
    return 1 if report.failed else 0


def status(deps: Deps, out: Callable[[str], None] = print) -> int:
    """A table of what runs, with each version's status tag (one registry read per managed model)."""
    rows = [("MODEL", "VERSION", "STATUS", "ENDPOINT")]
    for live in deps.target.observe().live():
        if not live.managed:
            continue
        version = deps.registry.get(live.model, live.version) if live.version is not None else None
        state = version.tags.get("deployment_status", "?") if version else "version deleted"
        state = state if live.kinds == frozenset({"Deployment", "Service", "Ingress"}) else f"{state} (incomplete)"
        rows.append((live.model, str(live.version), state, deps.target.endpoint(live.slug)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _version(deps: Deps, name: str, version: int) -> VersionInfo:
    info = deps.registry.get(name, version)
    if info is None:
        raise Permanent(f"{name} v{version} does not exist in the registry")
    return info
