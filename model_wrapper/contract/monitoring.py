"""The contract's monitoring sections: `logging` (the inference log's sample) and `drift` (its thresholds).

Pure types, validated strictly with the rest of the contract (`model_wrapper.contract.spec`): the wrapper
reads `logging` to sample requests into the inference log (`model_wrapper.predict.inference_log`), the
watcher reads `drift` to judge what `python -m watcher drift` measures.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Logging(_Strict):
    """`logging: {sample: 0.1}`: the share of predict requests written to the inference log."""

    sample: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    """0 writes nothing, 1 every request; overrides the wrapper's INFERENCE_LOG_SAMPLE."""


class Drift(_Strict):
    """`drift: {max_psi: 0.2, ...}`: when live inputs count as drifted from the reference data."""

    max_psi: float = Field(default=0.2, gt=0.0, le=100.0, allow_inf_nan=False)
    """A feature whose population stability index is above this has drifted (0.2 is the usual line)."""
    max_prediction_psi: float | None = Field(default=None, gt=0.0, le=100.0, allow_inf_nan=False)
    """The same for the predictions' distribution; left out, `max_psi` applies."""
    max_drifted_features: int = Field(default=0, ge=0, le=1000)
    """How many features may drift before the version is `drifted` (0: any one)."""
    min_requests: int = Field(default=100, ge=1, le=10_000_000)
    """Fewer logged instances in the window than this give no verdict (too few to measure)."""
    bins: int = Field(default=10, ge=2, le=100)
    """Quantile bins of the reference data per numeric feature."""
