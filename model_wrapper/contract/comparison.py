"""Two versions' answers to the same prediction request, compared: whether they predict the same, how far apart
their numbers are, and the counts a rollout's analysis reads (agreement, mean |candidate - live|).

Pure, shared by whoever mirrors requests: the local target's front (`watcher.targets.local_shadow`) and the
wrappers on Kubernetes (`model_wrapper.http.shadow`: the live one in a shadow, the candidate in a canary).
Table-tested in `tests/rollout/test_rules.py`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Tally:
    """One candidate's comparison with the live version: counted by whoever mirrors to it, and read back by the
    watcher's analysis (`watcher.decide.progressive.Figures`)."""

    compared: int = 0
    agreed: int = 0
    abs_diff_sum: float = 0.0
    abs_diff_count: int = 0
    rescued: int = 0
    """Caller requests the candidate failed (5xx) that the live version answered instead (local front only)."""
    mirror_failed: int = 0
    skipped: int = 0
    """Samples not mirrored because too many were in flight already."""

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    @property
    def mean_abs_diff(self) -> float | None:
        return self.abs_diff_sum / self.abs_diff_count if self.abs_diff_count else None

    def add(self, live_status: int, live: bytes, candidate_status: int, candidate: bytes) -> None:
        """Count one pair of answers. A live answer that is no success, or a candidate 5xx (which its own
        metrics count), compares nothing; a candidate's 4xx where live answered is a disagreement."""
        if live_status >= 300 or candidate_status >= 500:
            self.mirror_failed += 1
        elif candidate_status >= 300:
            self.compared += 1
        elif (result := compare(live, candidate)) is not None:
            agreed, diff_sum, diff_count = result
            self.compared += 1
            self.agreed += agreed
            self.abs_diff_sum += diff_sum
            self.abs_diff_count += diff_count


def is_prediction(method: str, path: str) -> bool:
    """The requests worth comparing: they carry inputs and answer predictions (`predict`, `invocations`, V2)."""
    return method == "POST" and path.endswith(("/api/predict", "/api/invocations", "/infer"))


def target_at(base: str, scope: Mapping[str, Any]) -> str:
    """An ASGI request's target at `base` as its caller sent it: path and query still percent-encoded, to be
    sent as they are (never decoded and encoded again), wherever the request is passed on or mirrored."""
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return base + path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")


def compare(live: bytes, candidate: bytes) -> tuple[bool, float, int] | None:
    """Whether two answers predict the same, and the sum and count of |candidate - live| over their numbers;
    None when they are not both predictions."""
    try:
        first, second = _predictions(json.loads(live)), _predictions(json.loads(candidate))
    except ValueError:
        return None
    if first is None or second is None:
        return None
    pairs = [(a, b) for a, b in zip(first, second, strict=False) if _number(a) and _number(b)]
    return first == second, float(sum(abs(float(b) - float(a)) for a, b in pairs)), len(pairs)


def _predictions(answer: Any) -> list[Any] | None:
    """The predictions of a `predict` or `invocations` answer, or a V2 answer's first output, flattened."""
    if isinstance(answer, dict) and isinstance(answer.get("predictions"), list):
        return _flat(answer["predictions"])
    if isinstance(answer, dict) and isinstance(answer.get("outputs"), list) and answer["outputs"]:
        data = answer["outputs"][0].get("data") if isinstance(answer["outputs"][0], dict) else None
        return _flat(data) if isinstance(data, list) else None
    return None


def _flat(values: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(_flat(value))
        elif isinstance(value, dict):
            flat.extend(value.get(key) for key in sorted(value))
        else:
            flat.append(value)
    return flat


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
