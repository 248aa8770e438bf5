"""A cheaper validator for `predict` bodies of numeric instances: one pass over the columns with numpy.

Built by the predictor beside the pydantic schema (`model_wrapper.predict.schema`) for models served on
arrays (`SklearnArrayBackend`). It only ever says "this body is valid, and here is the model's
array", or "not sure": then the predictor validates the body with the schema as before, so every
bad input still gets the schema's 422, naming the field and the row, word for word. Whatever it
accepts, the schema accepts too and turns into the same array, bit for bit
(`tests/wrapper/test_numeric_batch.py` compares both on hostile batches). So each rule about what a
value may be lives in one place, the schema; this module accepts only the plainest case of each:
JSON numbers, no booleans or strings, integers for integer fields (anything else, such as 70.0 for
an integer field, is left to the schema), no field missing or extra, inside the contract's bounds.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import orjson
from numpy.typing import NDArray

from model_wrapper.contract.spec import Contract, FieldSpec, FieldType

# Integers up to this size are exact as float64 (and as the bounds they are compared with), so the
# comparisons below decide as the schema's do; larger magnitudes are left to the schema.
EXACT = 2**53
_NUMBER_TYPES = frozenset({float, int})
_INTEGER_TYPES = frozenset({int})
# Below about this many instances pydantic-core's validation costs less than this module's fixed
# numpy and set overheads (bench/predict_path.py), so smaller bodies go straight to the schema.
SMALL_BATCH = 8


class NumericBatch:
    """Validates `{"instances": [{field: number, ...}, ...]}` into the model's array, or returns None."""

    def __init__(self, columns: list[str], specs: list[FieldSpec], max_batch: int, dtype: np.dtype[Any],
                 order: Literal["C", "F"]) -> None:
        self._columns = columns
        self._max_batch = max_batch
        self._dtype = dtype
        self._order = order
        # No body shorter than this holds SMALL_BATCH instances: each has `"name":0,` per field.
        self._small = SMALL_BATCH * sum(len(orjson.dumps(name)) + 3 for name in columns)
        self._checks = [(_INTEGER_TYPES if spec.type == FieldType.integer else _NUMBER_TYPES, *_bounds(spec))
                        for spec in specs]

    def array(self, body: bytes) -> NDArray[Any] | None:
        """The features of a valid body, as `np.array(schema.rows(body), dtype, order=order)` would
        build them; None when the schema must decide (invalid, not plainly valid, or small)."""
        if len(body) < self._small:
            return None
        instances = self._instances(body)
        if instances is None:
            return None
        try:
            values = [instance[name] for name in self._columns for instance in instances]
        except (KeyError, TypeError):  # a field missing, or an instance that is not an object
            return None
        count = len(instances)
        if sum(map(len, instances)) != count * len(self._columns) or not self._plain(values, count):
            return None  # an extra field, or a value that is not a plain JSON number inside its bounds
        features = np.array(values, dtype=self._dtype).reshape(len(self._columns), count).T
        return features if self._order == "F" else np.ascontiguousarray(features)

    def _instances(self, body: bytes) -> list[Any] | None:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(request) is not dict or len(request) != 1:
            return None
        instances = request.get("instances")
        if type(instances) is not list or not 0 < len(instances) <= self._max_batch:
            return None
        return instances

    def _plain(self, values: list[Any], count: int) -> bool:
        """Each column holds only its field's JSON number types, between its bounds. (Python's
        comparisons are exact; inside `EXACT` they decide as the schema's float64 ones do.)"""
        for start, (kinds, low, high) in zip(range(0, len(values), count), self._checks, strict=True):
            column = values[start:start + count]
            if not set(map(type, column)) <= kinds or min(column) < low or max(column) > high:
                return False
        return True


def numeric_batch(contract: Contract, columns: list[str], *, max_batch: int, dtype: np.dtype[Any],
                  order: Literal["C", "F"]) -> NumericBatch | None:
    """The cheaper validator for a model whose inputs are all required plain numbers fed as one
    array of `dtype`; None for any other contract (strings, enums, optional fields, NaN allowed)."""
    specs = [contract.inputs[name] for name in columns]
    numeric = all(spec.required and not spec.enum and not spec.allow_nan
                  and spec.type in (FieldType.number, FieldType.integer) for spec in specs)
    if not numeric or not specs or dtype not in (np.dtype(np.float64), np.dtype(np.int64)):
        return None
    if dtype == np.dtype(np.int64) and any(spec.type != FieldType.integer for spec in specs):
        return None  # a float cast to int64 is the schema path's business
    return NumericBatch(columns, specs, max_batch, dtype, order)


def _bounds(spec: FieldSpec) -> tuple[float, float]:
    """The field's bounds, narrowed to what `EXACT` leaves to this module. An integer field's are
    rounded inwards to integers, so that comparing integers with them decides as the schema does."""
    low = -EXACT if spec.minimum is None else max(spec.minimum, -EXACT)
    high = EXACT if spec.maximum is None else min(spec.maximum, EXACT)
    if spec.type == FieldType.integer:
        return math.ceil(low), math.floor(high)
    return float(low), float(high)
