"""The plain data the pass passes around: model versions, selectors and what a target runs, plus the tag names.

No behaviour beyond parsing and printing, and no third-party I/O import: the pure `decide` layer, the
clients that fill these from MLflow, and the targets that report them all import from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from model_wrapper.contract.spec import Serving

KINDS = frozenset({"Deployment", "Service", "Ingress"})
STATUS = "deployment_status"
ATTEMPT = "deployment_attempt"


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version, as much of it as the watcher needs."""

    name: str
    version: int
    source: str
    run_id: str | None
    tags: Mapping[str, str] = field(default_factory=dict, compare=False)
    model_id: str | None = field(default=None, compare=False)
    """The MLflow 3 logged model behind the version (None for versions registered MLflow-2 style)."""

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True)
class Selector:
    """Which model versions are meant to be live: `tag:KEY=VALUE`, `alias:NAME` or `stage:NAME`."""

    kind: Literal["tag", "alias", "stage"]
    key: str
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> Selector:
        kind, _, rest = text.partition(":")
        if kind == "tag" and re.fullmatch(r"[\w.\-/ ]{1,250}=[^'\\]{1,500}", rest):
            key, _, value = rest.partition("=")
            return cls("tag", key, value)
        if kind in ("alias", "stage") and re.fullmatch(r"[\w.\-]{1,250}", rest):
            return cls(kind, rest)  # type: ignore[arg-type]
        raise ValueError(f"{text!r} is not a selector; use tag:KEY=VALUE, alias:NAME or stage:NAME")

    def __str__(self) -> str:
        return f"tag:{self.key}={self.value}" if self.kind == "tag" else f"{self.kind}:{self.key}"


@dataclass(frozen=True)
class NearMiss:
    """A version the selector does not pick although it looks meant to (`watcher.decide.selection`)."""

    version: VersionInfo
    found: str
    """What looks meant for the selector, e.g. `the tag 'Deploy' = 'production'`."""


@dataclass(frozen=True)
class Live:
    """What a target runs under one slug."""

    slug: str
    model: str
    """The registered-model name it serves (empty when the objects are not ours)."""
    version: int | None
    spec_hash: str = ""
    inputs_digest: str = ""
    """The digest of what its manifests were rendered from (empty when unknown: then it is rendered)."""
    serving: Serving = field(default_factory=Serving)
    kinds: frozenset[str] = KINDS
    """Which of the managed kinds exist under the slug (the local target reports what it last ran)."""
    managed: bool = True
    needs: tuple[str, ...] = ()
    """The flavours and packages its runtime image was chosen by (a new RUNTIME_IMAGES re-chooses)."""
    rollback_to: int | None = None
    """The version an unfinished update replaced (Kubernetes): what serves while the update is not done."""
    candidate: int | None = None
    """The version on trial beside this one (a `rollout` section's shadow or canary), if one runs."""
