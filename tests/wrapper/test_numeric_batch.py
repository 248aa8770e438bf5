"""The cheaper numeric validator (`model_wrapper.predict.numeric_batch`) against the pydantic schema it stands in
for: on hostile batches, either it leaves the body to the schema, or the schema accepts the body too
and builds the same array bit for bit; through the predictor, every answer and every error (status,
message, the field and the row) is the same with it and without it. Pure, in-process, table-driven.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from model_wrapper.contract.spec import parse_contract
from model_wrapper.errors import WrapperError
from model_wrapper.predict.backends import SklearnArrayBackend
from model_wrapper.predict.numeric_batch import SMALL_BATCH, numeric_batch
from model_wrapper.predict.predictor import LoadedModel, Predictor

MIXED = parse_contract(b"""
inputs:
  length: {type: number, minimum: 0.1, maximum: 10}
  "weird \\"name\\" \\u00e9": {type: number}
  count: {type: integer, minimum: 1, maximum: 100}
outputs: {kind: {type: integer}}
""")
MIXED_COLUMNS = ["count", "length", 'weird "name" \u00e9']
INTEGERS = parse_contract(b"""
inputs:
  a: {type: integer}
  b: {type: integer, minimum: -5, maximum: 5}
outputs: {kind: {type: integer}}
""")
ROWS = 12  # more than SMALL_BATCH, so the cheaper validator is tried
assert ROWS > SMALL_BATCH
GOOD_MIXED = {"count": 3, "length": 2.5, 'weird "name" \u00e9': -1e-7}
GOOD_INTEGERS = {"a": 7, "b": -5}

# A value put at row 7 of an otherwise valid batch, in each field of each contract.
HOSTILE_VALUES: list[Any] = [
    0, -0, -0.0, 1, 5, 10, 0.1, 0.09999999999999999, 10.000000000000002, 100, 101, -5, -6, 70.0, 70.5, 3.0,
    1e-320, 1.7976931348623157e308, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1,
    1e17, True, False, None, "5", "", [], [1], {}, {"a": 1},
]
HOSTILE_TEXTS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1E2", b"1.0e0",
                 b"123456789012345678901234567890"]
HOSTILE_BODIES = [
    b"", b"nul", b"[]", b"{}", b'"instances"', b'{"instances": null}', b'{"instances": []}', b'{"instances": {}}',
    b"\xef\xbb\xbf" + json.dumps({"instances": [GOOD_MIXED] * ROWS}).encode(),
    json.dumps({"instances": [GOOD_MIXED] * ROWS, "params": {}}).encode(),
    json.dumps({"instances": [GOOD_MIXED] * ROWS, "extra": 1}).encode(),
    json.dumps({"instances": [GOOD_MIXED] * 101}).encode(),
    json.dumps({"instances": [GOOD_MIXED] * 100}).encode(),
    json.dumps({"instances": [GOOD_MIXED] * (ROWS - 1) + [list(GOOD_MIXED.values())]}).encode(),
    json.dumps({"instances": [GOOD_MIXED] * (ROWS - 1) + ["count"]}).encode(),
    json.dumps({"instances": [GOOD_MIXED] * (ROWS - 1) + [3]}).encode(),
    json.dumps({"instances": [GOOD_MIXED] * (ROWS - 1) + [None]}).encode(),
    json.dumps({"instances": [{**GOOD_MIXED, "surprise": 1}] + [GOOD_MIXED] * ROWS}).encode(),
    json.dumps({"instances": [{"count": 3, "length": 2.5}] * 2 + [GOOD_MIXED] * ROWS}).encode(),
    b'{"instances": [' + b'{"count": 1, "count": 2.5, "length": 1, "weird \\"name\\" \\u00e9": 0},' * ROWS + b'{}]}',
    b'{"instances": [' + b'{"count": 2, "length": 1, "weird \\"name\\" \\u00e9": 0},' * ROWS + b"]}",
    b'{"instances": [' + b'{"count": 2, "length": 1, "weird \\"name\\" \\u00e9": 0},' * ROWS + b"\xff]}",
    b'{"instances": [{"count": 2}]' + b" " * 2000 + b"}",
    b'{"instances": [' + b"[" * 3000 + b"]" * 3000 + b"]}",
]


def _predictor(contract: Any, columns: list[str], dtype: type, order: Literal["C", "F"]) -> Predictor:
    rng = np.random.default_rng(7)
    features = rng.uniform(0, 5, size=(60, len(columns))).round().astype(dtype)
    estimator = LogisticRegression(max_iter=500).fit(features, np.arange(60) % 3)
    backend = SklearnArrayBackend(estimator, columns, np.dtype(dtype), lambda body, kind: (501, b"", "text/plain"),
                                  order=order)
    predictor = Predictor(name="m", version="1", max_batch=100)
    predictor.install(LoadedModel(contract=contract, contract_origin="test", backend=backend, run_id=None))
    return predictor


PREDICTORS = {
    "mixed, float64, column-major": _predictor(MIXED, MIXED_COLUMNS, np.float64, "F"),
    "integers, int64, row-major": _predictor(INTEGERS, ["b", "a"], np.int64, "C"),
}
GOOD = {"mixed, float64, column-major": GOOD_MIXED, "integers, int64, row-major": GOOD_INTEGERS}


def _hostile_batches() -> list[tuple[str, bytes]]:
    cases = [(name, body) for name in PREDICTORS for body in HOSTILE_BODIES]
    for name, good in GOOD.items():
        for field in good:
            for value in HOSTILE_VALUES:
                cases.append((name, _batch(good, field, json.dumps(value).encode())))
            cases += [(name, _batch(good, field, text)) for text in HOSTILE_TEXTS]
    return cases


def _batch(good: dict[str, Any], field: str, text: bytes) -> bytes:
    """ROWS valid instances, with `field` of row 7 written as the raw JSON `text`."""
    marker = "@@"
    instances = [good] * 7 + [{**good, field: marker}] + [good] * (ROWS - 8)
    return json.dumps({"instances": instances}).encode().replace(b'"@@"', text)


def _outcome(predictor: Predictor, body: bytes) -> tuple[Any, ...]:
    try:
        return ("answer", predictor.predict_body(body))
    except WrapperError as e:
        return ("error", type(e), e.status_code, e.message, e.details)


@pytest.mark.parametrize(("name", "body"), _hostile_batches())
def test_on_hostile_batches_it_accepts_only_what_the_schema_accepts_and_builds_the_same_array(
        name: str, body: bytes) -> None:
    predictor = PREDICTORS[name]
    assert predictor.batch is not None and predictor.schema is not None
    features = predictor.batch.array(body)
    if features is None:
        return
    dtype, order = predictor.installed().backend.layout or (None, "C")
    expected = np.array(predictor.schema.rows(body), dtype=dtype, order=order)  # raises if the schema refuses
    assert (features.dtype, features.shape, features.tobytes(order="A")) == \
        (expected.dtype, expected.shape, expected.tobytes(order="A"))
    assert features.flags.f_contiguous == expected.flags.f_contiguous
    assert features.flags.c_contiguous == expected.flags.c_contiguous


@pytest.mark.parametrize(("name", "body"), _hostile_batches())
def test_every_answer_and_every_error_is_the_same_with_it_and_without_it(name: str, body: bytes) -> None:
    predictor = PREDICTORS[name]
    with_it = _outcome(predictor, body)
    batch, predictor.batch = predictor.batch, None
    try:
        without = _outcome(predictor, body)
    finally:
        predictor.batch = batch

    assert with_it == without


def test_plain_valid_batches_take_the_cheaper_path_and_small_ones_the_schema() -> None:
    for name, good in GOOD.items():
        batch = PREDICTORS[name].batch
        assert batch is not None
        assert batch.array(json.dumps({"instances": [good] * ROWS}).encode()) is not None, name
        assert batch.array(json.dumps({"instances": [good]}).encode()) is None, name


@pytest.mark.parametrize("contract", [
    b"inputs: {a: {type: number}, b: {type: string}}",
    b"inputs: {a: {type: number}, b: {type: number, required: false}}",
    b"inputs: {a: {type: number}, b: {type: number, allow_nan: true}}",
    b"inputs: {a: {type: number}, b: {type: integer, enum: [1, 2]}}",
    b"inputs: {a: {type: number}, b: {type: boolean}}",
])
def test_contracts_beyond_plain_required_numbers_keep_the_schema_alone(contract: bytes) -> None:
    parsed = parse_contract(contract + b"\noutputs: {y: {type: number}}")

    assert numeric_batch(parsed, ["a", "b"], max_batch=10, dtype=np.dtype(np.float64), order="F") is None


def test_number_fields_fed_as_int64_keep_the_schema_alone() -> None:
    parsed = parse_contract(b"inputs: {a: {type: number}}\noutputs: {y: {type: number}}")

    assert numeric_batch(parsed, ["a"], max_batch=10, dtype=np.dtype(np.int64), order="F") is None


ANY_VALUE = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([True, False, None, "1", 0.1, 10, 100, 101, -5, -6, 70.0, 70.5]))
FINITE = st.floats(allow_nan=False, allow_infinity=False)
VALID = {
    "mixed, float64, column-major": {
        "count": st.integers(1, 100), "length": st.one_of(st.floats(0.1, 10), st.integers(1, 10)),
        'weird "name" \u00e9': st.one_of(FINITE, st.integers(-(2**54), 2**54))},
    "integers, int64, row-major": {"a": st.integers(-(2**54), 2**54), "b": st.integers(-5, 5)},
}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(PREDICTORS)), st.data())
def test_generated_batches_get_the_same_answer_or_error_with_it_and_without_it(name: str, data: st.DataObject) -> None:
    instances = data.draw(st.lists(st.fixed_dictionaries(VALID[name]), min_size=SMALL_BATCH, max_size=40))
    if data.draw(st.booleans()):  # spoil one value
        row, field = data.draw(st.integers(0, len(instances) - 1)), data.draw(st.sampled_from(sorted(VALID[name])))
        instances[row] = {**instances[row], field: data.draw(ANY_VALUE)}
    body = json.dumps({"instances": instances}).encode()

    test_every_answer_and_every_error_is_the_same_with_it_and_without_it(name, body)
    test_on_hostile_batches_it_accepts_only_what_the_schema_accepts_and_builds_the_same_array(name, body)
