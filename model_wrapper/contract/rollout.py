"""The contract's optional `rollout` section: how a new version takes live traffic beside the one serving now.

Pure types, validated strictly with the rest of the contract (`model_wrapper.contract.spec`); the watcher
(`watcher.decide.progressive`) judges a candidate's figures by them, step after step.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STEPS = 10


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Analysis(_Strict):
    """What the candidate must show in each step before it goes further (each bound optional but the first three)."""

    interval: float = Field(default=60, gt=0, le=86_400)
    """Seconds a step lasts at least."""
    min_requests: int = Field(default=200, ge=1, le=10**9)
    """Requests the candidate must have answered in a step before any verdict."""
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    """Share of the candidate's answers that may be 5xx."""
    max_p99_ms: float | None = Field(default=None, gt=0, le=3_600_000)
    min_agreement: float | None = Field(default=None, ge=0, le=1)
    """Classification: share of compared requests where the candidate answered exactly as the live version."""
    max_mean_abs_diff: float | None = Field(default=None, ge=0)
    """Regression: mean |candidate - live| over the compared predictions."""


class Rollout(_Strict):
    """The contract's `rollout` section."""

    strategy: Literal["shadow", "canary"]
    steps: list[int] = Field(default=[], max_length=MAX_STEPS)
    """Canary only: the candidate's share of live traffic (percent) per step; after the last, it is promoted."""
    sample: float = Field(default=1.0, gt=0, le=1)
    """Shadow: the share of live requests also sent to the candidate; canary: the share of the candidate's
    answers also asked of the live version. Those are the compared requests."""
    analysis: Analysis = Analysis()

    @field_validator("steps")
    @classmethod
    def _rising_percentages(cls, steps: list[int]) -> list[int]:
        if any(not 1 <= step <= 99 for step in steps):
            raise ValueError(f"each step is a percentage of live traffic between 1 and 99 (100 is the promotion): "
                             f"{steps}")
        if any(a >= b for a, b in pairwise(steps)):
            raise ValueError(f"steps must rise: {steps}")
        return steps

    @model_validator(mode="after")
    def _steps_fit_the_strategy(self) -> Rollout:
        if self.strategy == "canary" and not self.steps:
            raise ValueError("canary needs steps, e.g. steps: [10, 50] (percent of live traffic per step)")
        if self.strategy == "shadow" and self.steps:
            raise ValueError("steps apply to canary only: a shadow serves no caller from the candidate")
        return self

    @property
    def stages(self) -> list[str]:
        """What `rollout_status` says during each step, in order."""
        return ["shadowing"] if self.strategy == "shadow" else [f"canary {step}%" for step in self.steps]

    def problems_for(self, task: str) -> list[str]:
        """Where the section does not fit the contract's task."""
        problems = []
        if task == "regression" and self.analysis.min_agreement is not None:
            problems.append("analysis.min_agreement compares classes; for regression use max_mean_abs_diff")
        if task == "classification" and self.analysis.max_mean_abs_diff is not None:
            problems.append("analysis.max_mean_abs_diff compares numbers; for classification use min_agreement")
        return problems
