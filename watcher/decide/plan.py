"""Step 2 of the pass: decide what to do, as a pure function of what is selected and what runs.

No I/O here: `plan()` takes plain data (the selected versions, the live models, and pure
functions for slugs and hashes) and returns actions, so every lifecycle case is a table test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from watcher.decide.retry import Retrying, as_utc
from watcher.decide.types import ATTEMPT, KINDS, STATUS, Live, VersionInfo


@dataclass(frozen=True)
class Deploy:
    version: VersionInfo
    slug: str
    reason: Literal["new", "update", "reconfigure", "repair"]
    previous: Live | None = None

    @property
    def evaluates(self) -> bool:
        """Only a version about to take traffic passes through the gate (and is tagged deploying);
        reconfiguring or repairing the version already serving does not ask again."""
        return self.reason in ("new", "update")


@dataclass(frozen=True)
class RecordDeployed:
    """The right version already runs; only its tags are out of date (e.g. a pass was killed)."""

    version: VersionInfo
    live: Live


@dataclass(frozen=True)
class RollBack:
    """The selected version failed for good but its template is still live: an interrupted roll-back."""

    version: VersionInfo
    live: Live


@dataclass(frozen=True)
class StepRollout:
    """The selected version is on trial beside the live one: look at its figures and step, promote or roll back."""

    version: VersionInfo
    live: Live


@dataclass(frozen=True)
class DropCandidate:
    """A version on trial that is no longer wanted (deselected, or failed): stop it; the live version serves."""

    live: Live


@dataclass(frozen=True)
class Supersede:
    version: VersionInfo
    winner: int


@dataclass(frozen=True)
class Undeploy:
    live: Live
    retag: bool = True
    """False when the model is still served under another name (its slug moved): its tags stay."""


@dataclass(frozen=True)
class Clash:
    version: VersionInfo
    slug: str
    message: str


Action = Deploy | RecordDeployed | RollBack | StepRollout | DropCandidate | Supersede | Undeploy | Clash


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
    kinds_of: Callable[[VersionInfo, Live], frozenset[str]] = lambda version, live: KINDS,
    now: datetime | None = None,
    eager: Collection[str] = frozenset(),
) -> Plan:
    """Actions that make what runs match what is selected; nothing for what already matches.

    `now` is the clock a retry's pause is measured by (None: no pause is honoured); `eager` names the models
    a person or a webhook just asked for, which are retried at once."""
    by_slug = {item.slug: item for item in live}
    winners, losers = _winners(selected)
    actions: list[Action] = [Supersede(v, winner) for v, winner in losers
                             if not _serving(v, by_slug.get(slug_of(v.name)))]
    unchanged: list[str] = []
    claimed: dict[str, str] = {}
    for version in _incumbents_first(winners, by_slug, slug_of):
        slug = slug_of(version.name)
        current = by_slug.get(slug)
        clash = _clash(version, slug, current, claimed)
        claimed.setdefault(slug, version.name)
        if clash:
            actions.append(Clash(version, slug, clash))
        elif _failed_before(version, attempt_of) or _pausing(version, attempt_of, now, eager):
            if current is not None and current.version == version.version and current.rollback_to not in (
                    None, version.version):
                actions.append(RollBack(version, current))
            elif current is not None and current.candidate is not None:  # e.g. a killed pass left it running
                actions.append(DropCandidate(current))
            else:
                unchanged.append(str(version))
        elif (action := _converge(version, slug, current, spec_hash_of, kinds_of)) is not None:
            actions.append(action)
        else:
            unchanged.append(str(version))
    served = set(claimed.values())
    actions.extend(Undeploy(item, retag=item.model not in served) for slug, item in sorted(by_slug.items())
                   if item.managed and slug not in claimed)
    return Plan(tuple(actions), tuple(unchanged), len(selected), frozenset(v.name for v in winners))


def _winners(selected: Sequence[VersionInfo]) -> tuple[list[VersionInfo], list[tuple[VersionInfo, int]]]:
    """The highest selected version of each model, and the others (not yet superseded) with their winner."""
    by_model: dict[str, list[VersionInfo]] = defaultdict(list)
    for version in selected:
        by_model[version.name].append(version)
    winners: list[VersionInfo] = []
    losers: list[tuple[VersionInfo, int]] = []
    for name in sorted(by_model):
        versions = sorted(by_model[name], key=lambda v: v.version, reverse=True)
        winners.append(versions[0])
        losers.extend((v, versions[0].version) for v in versions[1:] if v.tags.get(STATUS) != "superseded")
    return winners, losers


def _serving(version: VersionInfo, current: Live | None) -> bool:
    """The loser still runs: it is superseded only once the winner is ready (by the winner's Deploy)."""
    return current is not None and current.model == version.name and version.version in (current.version,
                                                                                          current.rollback_to)


def _incumbents_first(winners: list[VersionInfo], by_slug: dict[str, Live],
                      slug_of: Callable[[str], str]) -> list[VersionInfo]:
    """When two names share a slug, the model already served under it keeps it; the newcomer clashes."""
    def newcomer(version: VersionInfo) -> bool:
        current = by_slug.get(slug_of(version.name))
        return current is None or current.model != version.name

    return sorted(winners, key=lambda v: (newcomer(v), v.name))


def _clash(version: VersionInfo, slug: str, current: Live | None, claimed: dict[str, str]) -> str | None:
    if slug in claimed:
        return f"the name {slug!r} is already used by the model {claimed[slug]!r}; rename one of them"
    if current is None:
        return None
    if not current.managed:
        return (f"Kubernetes objects named {slug!r} exist and are not managed by Service Builder; "
                "delete or rename them, or rename the model")
    if current.model != version.name:
        return f"the name {slug!r} is already used by the model {current.model!r}; rename one of them"
    return None


def _failed_before(version: VersionInfo, attempt_of: Callable[[VersionInfo], str]) -> bool:
    """A version that failed permanently with these same inputs is not retried until something changes.
    (The key is computed only for failed versions: it hashes the settings, too slow to do for every one.)"""
    return version.tags.get(STATUS) == "failed" and version.tags.get(ATTEMPT) == attempt_of(version)


def _pausing(version: VersionInfo, attempt_of: Callable[[VersionInfo], str], now: datetime | None,
             eager: Collection[str]) -> bool:
    """A version the cluster failed is left alone until its pause is over, unless its inputs changed since."""
    if now is None or version.name in eager or version.tags.get(STATUS) != "failed":
        return False
    record = Retrying.parse(version.tags.get(ATTEMPT, ""))
    return record is not None and record.after is not None and as_utc(now) < record.after and \
        record.key == attempt_of(version)


def _converge(
    version: VersionInfo, slug: str, current: Live | None, spec_hash_of: Callable[[VersionInfo, Live], str],
    kinds_of: Callable[[VersionInfo, Live], frozenset[str]],
) -> Action | None:
    if current is None:
        return Deploy(version, slug, "new")
    if current.candidate == version.version:
        return StepRollout(version, current)
    if current.candidate is not None and current.version == version.version:
        return DropCandidate(current)
    if current.version != version.version:  # a candidate on trial is replaced by the newer version
        return Deploy(version, slug, "update", current)
    if current.spec_hash != spec_hash_of(version, current):
        return Deploy(version, slug, "reconfigure", current)
    if current.kinds != kinds_of(version, current):  # one deleted by hand, or one left over
        return Deploy(version, slug, "repair", current)
    if version.tags.get(STATUS) != "deployed" or version.tags.get("deployment_name") != slug:
        return RecordDeployed(version, current)
    return None
