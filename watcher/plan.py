"""Step 2 of the pass: decide what to do, as a pure function of what is selected and what runs.

No I/O here: `plan()` takes plain data (the selected versions, the live models, and pure
functions for slugs and hashes) and returns actions, so every lifecycle case is a table test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from model_wrapper.contract import Serving
from watcher.registry import VersionInfo

KINDS = frozenset({"Deployment", "Service", "Ingress"})
STATUS = "deployment_status"
ATTEMPT = "deployment_attempt"


@dataclass(frozen=True)
class Live:
    """What a target runs under one slug."""

    slug: str
    model: str
    """The registered-model name it serves (empty when the objects are not ours)."""
    version: int | None
    spec_hash: str = ""
    serving: Serving = field(default_factory=Serving)
    kinds: frozenset[str] = KINDS
    """Which of Deployment, Service and Ingress exist (the local target reports all or none)."""
    managed: bool = True


@dataclass(frozen=True)
class Deploy:
    version: VersionInfo
    slug: str
    reason: Literal["new", "update", "reconfigure", "repair"]
    previous: Live | None = None


@dataclass(frozen=True)
class RecordDeployed:
    """The right version already runs; only its tags are out of date (e.g. a pass was killed)."""

    version: VersionInfo
    live: Live


@dataclass(frozen=True)
class Supersede:
    version: VersionInfo
    winner: int


@dataclass(frozen=True)
class Undeploy:
    live: Live


@dataclass(frozen=True)
class Clash:
    version: VersionInfo
    slug: str
    message: str


Action = Deploy | RecordDeployed | Supersede | Undeploy | Clash


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    unchanged: tuple[str, ...] = ()
    found: int = 0
    models: frozenset[str] = field(default_factory=frozenset)


def plan(
    selected: Sequence[VersionInfo],
    live: Iterable[Live],
    *,
    slug_of: Callable[[str], str],
    spec_hash_of: Callable[[VersionInfo, Live], str],
    attempt_of: Callable[[VersionInfo], str],
) -> Plan:
    """Actions that make what runs match what is selected; nothing for what already matches."""
    by_slug = {item.slug: item for item in live}
    winners, actions = _winners(selected)
    unchanged: list[str] = []
    claimed: set[str] = set()
    for version in winners:
        slug = slug_of(version.name)
        current = by_slug.get(slug)
        clash = _clash(version, slug, current, claimed)
        claimed.add(slug)
        if clash:
            actions.append(Clash(version, slug, clash))
        elif _failed_before(version, attempt_of(version)):
            unchanged.append(str(version))
        elif (action := _converge(version, slug, current, spec_hash_of)) is not None:
            actions.append(action)
        else:
            unchanged.append(str(version))
    actions.extend(Undeploy(item) for slug, item in sorted(by_slug.items())
                   if item.managed and slug not in claimed)
    return Plan(tuple(actions), tuple(unchanged), len(selected), frozenset(v.name for v in winners))


def _winners(selected: Sequence[VersionInfo]) -> tuple[list[VersionInfo], list[Action]]:
    """The highest selected version of each model; the others are superseded (once)."""
    by_model: dict[str, list[VersionInfo]] = defaultdict(list)
    for version in selected:
        by_model[version.name].append(version)
    winners: list[VersionInfo] = []
    actions: list[Action] = []
    for name in sorted(by_model):
        versions = sorted(by_model[name], key=lambda v: v.version, reverse=True)
        winners.append(versions[0])
        actions.extend(Supersede(v, versions[0].version) for v in versions[1:] if v.tags.get(STATUS) != "superseded")
    return winners, actions


def _clash(version: VersionInfo, slug: str, current: Live | None, claimed: set[str]) -> str | None:
    if slug in claimed:
        return f"another selected model already uses the name {slug!r}; rename one of them"
    if current is None:
        return None
    if not current.managed:
        return (f"Kubernetes objects named {slug!r} exist and are not managed by Service Builder; "
                "delete or rename them, or rename the model")
    if current.model != version.name:
        return f"the name {slug!r} is already used by the model {current.model!r}; rename one of them"
    return None


def _failed_before(version: VersionInfo, attempt: str) -> bool:
    """A version that failed permanently with these same inputs is not retried until something changes."""
    return version.tags.get(STATUS) == "failed" and version.tags.get(ATTEMPT) == attempt


def _converge(
    version: VersionInfo, slug: str, current: Live | None, spec_hash_of: Callable[[VersionInfo, Live], str]
) -> Action | None:
    if current is None:
        return Deploy(version, slug, "new")
    if current.version != version.version:
        return Deploy(version, slug, "update", current)
    if current.spec_hash != spec_hash_of(version, current):
        return Deploy(version, slug, "reconfigure", current)
    if current.kinds != KINDS:
        return Deploy(version, slug, "repair", current)
    if version.tags.get(STATUS) != "deployed" or version.tags.get("deployment_name") != slug:
        return RecordDeployed(version, current)
    return None
