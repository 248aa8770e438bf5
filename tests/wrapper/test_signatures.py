"""Every signature MLflow logs becomes fields (binary and datetime columns, several named tensors,
params schemas), or, for tensors no row of fields can hold, a contract without inputs. Pure
functions over the MLmodel file's JSON, table-driven; the conformance suite serves the same kinds
of model for real."""

from __future__ import annotations

import json
from typing import Any

import pytest

from model_wrapper.contract.signature import (
    contract_from_signature,
    describe_tensors,
    signature_mismatches,
    signature_tensors,
    tensors_without_fields,
    within_tensor_range,
)
from model_wrapper.contract.spec import ContractError
from model_wrapper.errors import InvalidInput
from model_wrapper.predict.schema import build_schema


def tensor(name: str, dtype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}}


KERAS = [tensor("a", "float32", [-1, 2]), tensor("b", "int32", [-1])]
PARAMS = [{"name": "scale", "type": "double", "default": 1.0, "shape": None},
          {"name": "mode", "type": "string", "default": "ok", "shape": None},
          {"name": "when", "type": "datetime", "default": "2023-07-01", "shape": None},
          {"name": "weights", "type": "long", "default": [1, 2], "shape": [-1]}]


def test_binary_and_datetime_columns_are_string_fields_that_say_how_to_write_them() -> None:
    contract = contract_from_signature(
        [{"name": "blob", "type": "binary"}, {"name": "when", "type": "datetime", "required": False}],
        [{"blob": "AAE=", "when": "2024-05-01T12:00:00"}])

    assert {name: spec.type.value for name, spec in contract.inputs.items()} == {"blob": "string", "when": "string"}
    assert "base64" in (contract.inputs["blob"].description or "")
    assert "ISO 8601" in (contract.inputs["when"].description or "")
    assert contract.inputs["when"].required is False
    assert contract.examples == [{"blob": "AAE=", "when": "2024-05-01T12:00:00"}]


def test_several_named_tensors_are_their_fields_one_tensor_after_the_other() -> None:
    contract = contract_from_signature(KERAS, [[0.5, 1.5, 3], [1, 2, 4], [1, 2]])

    assert {name: spec.type.value for name, spec in contract.inputs.items()} == \
        {"a_0": "number", "a_1": "number", "b": "integer"}
    assert contract.examples == [{"a_0": 0.5, "a_1": 1.5, "b": 3}, {"a_0": 1, "a_1": 2, "b": 4}]
    assert "a: a float32 tensor of shape (-1, 2)" in contract.description
    assert signature_mismatches(contract, KERAS) == []


def test_each_field_of_a_tensor_group_is_bounded_by_its_own_tensors_dtype() -> None:
    contract = within_tensor_range(contract_from_signature(KERAS), signature_tensors(KERAS) or [])

    assert contract.inputs["a_1"].maximum == pytest.approx(3.4028234663852886e38)
    assert (contract.inputs["b"].minimum, contract.inputs["b"].maximum) == (-(2.0**31), 2.0**31 - 1)


@pytest.mark.parametrize(("inputs", "fragment"), [
    ({"a_0": {"type": "number"}, "b": {"type": "integer"}},
     "the contract has 2 inputs but the model takes a: a float32"),
    ({"a_0": {"type": "number"}, "a_1": {"type": "number"}, "b": {"type": "number"}},
     "b: contract says number, model signature says int32"),
])
def test_a_contract_that_does_not_fill_the_tensors_is_a_mismatch_naming_them(inputs: dict[str, Any],
                                                                             fragment: str) -> None:
    from model_wrapper.contract.spec import contract_from_dict

    problems = signature_mismatches(contract_from_dict({"inputs": inputs}), KERAS)

    assert any(fragment in problem for problem in problems), problems


@pytest.mark.parametrize(("inputs", "fragment"), [
    ([tensor("a", "float32", [-1, 28, 28]), tensor("b", "int32", [-1])], "a: a float32 tensor of shape (-1, 28, 28)"),
    ([tensor("a", "str", [-1]), tensor("b", "int32", [-1])], "a: a str tensor of shape (-1,)"),
])
def test_named_tensors_that_are_not_rows_of_values_derive_a_contract_without_fields(inputs: list[dict[str, Any]],
                                                                                   fragment: str) -> None:
    contract = contract_from_signature(inputs)

    assert contract.inputs == {} and contract.examples == []
    assert fragment in contract.description and "POST it to invocations" in contract.description
    assert signature_mismatches(contract, inputs) == []
    assert signature_mismatches(contract_from_signature(KERAS), inputs) == [
        f"the contract has 3 inputs, but the model takes {describe_tensors(tensors_without_fields(inputs) or [])}, "
        "which cannot be given as fields; leave inputs out of the contract (the model is served through invocations)"]


def test_a_contract_without_inputs_fits_only_a_model_whose_tensors_cannot_be_fields() -> None:
    from model_wrapper.contract.spec import contract_from_dict

    bare = contract_from_dict({"title": "An image classifier", "serving": {"replicas": 2}})

    assert signature_mismatches(bare, [tensor("img", "uint8", [-1, 28, 28, 3])]) == []
    for fieldable in (KERAS, [{"name": "x", "type": "double"}], [{"name": "x", "type": "double", "required": False}]):
        assert signature_mismatches(bare, fieldable) == [
            "the contract has no inputs; list the model's inputs (only a model whose tensors cannot be given as "
            "fields goes without)"]
    with pytest.raises(ContractError, match="evaluation needs inputs"):
        contract_from_dict({"task": "classification", "evaluation": {
            "data": "evaluation.csv", "target": "y", "metrics": {"accuracy": {"min": 0.5}}}})


def test_a_signature_mlflow_cannot_log_is_still_refused() -> None:
    unnamed_among_named = [tensor("a", "float32", [-1]), {"type": "tensor", "tensor-spec": {"dtype": "int32",
                                                                                           "shape": [-1]}}]
    with pytest.raises(ContractError, match="pandas DataFrame input example") as refused:
        contract_from_signature(unnamed_among_named)
    assert "2 inputs with tensors among them" in str(refused.value)


SCHEMA = build_schema(contract_from_signature([{"name": "x", "type": "double"}]), ["x"], max_batch=5, title="P",
                      params=PARAMS)


def _parse(params: Any) -> Any:
    return SCHEMA.parse(json.dumps({"instances": [{"x": 1.0}], "params": params}).encode())


def test_predict_params_are_passed_as_given_and_the_rest_left_to_their_defaults() -> None:
    given = {"scale": 2, "when": "2024-01-02T03:04:05"}
    assert _parse(given) == ([(1.0,)], given)
    assert _parse({"weights": [3, 4]})[1] == {"weights": [3, 4]}
    assert SCHEMA.parse(b'{"instances": [{"x": 1.0}]}') == ([(1.0,)], None)
    assert _parse({}) == ([(1.0,)], None)


@pytest.mark.parametrize(("params", "field"), [
    ({"scale": "abc"}, "params.scale"), ({"mode": 1}, "params.mode"), ({"weights": [1.5]}, "params.weights[0]"),
    ({"sclae": 2}, "params.sclae"), ([1, 2], "params"),
])
def test_params_outside_the_schema_get_422_naming_the_param(params: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        _parse(params)
    assert refused.value.details[0]["field"] == field


def test_a_model_without_params_refuses_them_by_name() -> None:
    plain = build_schema(contract_from_signature([{"name": "x", "type": "double"}]), ["x"], max_batch=5, title="P")

    with pytest.raises(InvalidInput) as refused:
        plain.parse(b'{"instances": [{"x": 1.0}], "params": {"scale": 2}}')
    assert refused.value.details[0]["field"] == "params"


def test_the_params_schema_shows_each_params_type_and_default() -> None:
    schema = SCHEMA.request_model.model_json_schema(mode="validation")
    params = schema["$defs"]["Params"]["properties"]

    assert (params["scale"]["type"], params["scale"]["default"]) == ("number", 1.0)
    assert (params["when"]["format"], params["when"]["default"]) == ("date-time", "2023-07-01")
    assert (params["weights"]["type"], params["weights"]["items"]["type"], params["weights"]["default"]) == \
        ("array", "integer", [1, 2])
