"""What the namespace holds, read from one list per managed kind, and the per-model view the plan takes.

Built by `watcher.targets.kubernetes.cluster.KubernetesTarget.observe`; pure over the API's plain dicts. A
candidate's objects (`watcher.render.candidate`: `<slug>-candidate`, marked with the slug they are on trial
beside) are no model of their own: they are the `candidate` of that slug's view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from model_wrapper.contract.spec import Serving
from watcher.decide.types import Live
from watcher.render.candidate import CANDIDATE_OF, TRACK_LABEL
from watcher.render.manifests import (
    INPUTS_DIGEST,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_NAME,
    MODEL_VERSION,
    NEEDS,
    ROLLBACK_TO,
    SERVING,
    SPEC_HASH,
)


@dataclass
class Snapshot:
    """What the namespace holds, from one list per kind: raw objects by (kind, name), and per-slug views."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _on_trial: dict[str, dict[str, dict[str, Any]]] | None = field(default=None, init=False, repr=False,
                                                                   compare=False)

    def live(self) -> list[Live]:
        by_slug: dict[str, dict[str, dict[str, Any]]] = {}
        on_trial: dict[str, dict[str, dict[str, Any]]] = {}
        for (kind, name), obj in self.objects.items():  # one walk: a pass stays linear in the models
            beside = candidate_of(obj)
            if beside is not None:
                on_trial.setdefault(beside, {})[kind] = obj
            else:
                by_slug.setdefault(name, {})[kind] = obj
        return [self._live(slug, by_slug[slug], on_trial.get(slug)) for slug in sorted(by_slug)]

    def candidate(self, slug: str) -> dict[str, dict[str, Any]]:
        """The candidate objects on trial beside `slug`, by kind (empty: none); indexed on the first call, as a
        pass asks once per model it deploys or removes."""
        if self._on_trial is None:
            self._on_trial = {}
            for (kind, _), obj in self.objects.items():
                if (beside := candidate_of(obj)) is not None:
                    self._on_trial.setdefault(beside, {})[kind] = obj
        return dict(self._on_trial.get(slug, {}))

    def _live(self, slug: str, present: dict[str, dict[str, Any]],
              candidate: dict[str, dict[str, Any]] | None = None) -> Live:
        ours = all(managed(obj) for obj in present.values())
        first = present.get("Deployment") or next(iter(present.values()))
        notes = first.get("metadata", {}).get("annotations") or {}
        return Live(slug=slug, model=notes.get(MODEL_NAME, "") if ours else "",
                    version=_int(notes.get(MODEL_VERSION)), spec_hash=notes.get(SPEC_HASH, ""),
                    inputs_digest=notes.get(INPUTS_DIGEST, ""), serving=_serving(notes.get(SERVING)),
                    rollback_to=_int(notes.get(ROLLBACK_TO)),
                    kinds=frozenset(present), managed=ours, needs=_needs(notes.get(NEEDS)),
                    candidate=_candidate_version(candidate) if ours and candidate else None)


def candidate_of(obj: dict[str, Any]) -> str | None:
    """The slug a managed candidate object is on trial beside, or None (a model's own object, or not ours)."""
    meta = obj.get("metadata") or {}
    if not managed(obj) or (meta.get("labels") or {}).get(TRACK_LABEL) != "candidate":
        return None
    beside = (meta.get("annotations") or {}).get(CANDIDATE_OF)
    return beside if isinstance(beside, str) and beside else None


def _candidate_version(present: dict[str, dict[str, Any]]) -> int:
    """The candidate's version; 0 for leftovers whose version cannot be read (the plan drops them all the same)."""
    first = present.get("Deployment") or next(iter(present.values()))
    return _int((first.get("metadata", {}).get("annotations") or {}).get(MODEL_VERSION)) or 0


def managed(obj: dict[str, Any]) -> bool:
    return (obj.get("metadata", {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _needs(value: str | None) -> tuple[str, ...]:
    try:
        found = json.loads(value) if value else []
    except ValueError:
        return ()
    return tuple(str(item) for item in found) if isinstance(found, list) else ()


def _serving(value: str | None) -> Serving:
    try:
        return Serving.model_validate_json(value) if value else Serving()
    except ValueError:
        return Serving()
