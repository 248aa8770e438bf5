"""Broken and hostile contracts, and hostile MLmodel files beside them, from the table down to a real pass.

Registry content is untrusted: anyone who can log a model can write these files. Each case must
end as `failed` with a message that says what to fix: no crash, no hang, and the other models in
the same pass still deploy. The table tests call `parse_contract` directly; the pass tests log
real models carrying the file and run one reconcile pass over all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from devstack.models import IRIS_CONTRACT, log_iris
from model_wrapper.contract.naming import model_slug
from model_wrapper.contract.signature import (
    TensorInput,
    contract_from_signature,
    signature_mismatches,
    within_tensor_range,
)
from model_wrapper.contract.spec import MAX_CONTRACT_BYTES, ContractError, parse_contract
from tests.faults.support import tags
from tests.peers import KubernetesPeer
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

IRIS = yaml.safe_load(IRIS_CONTRACT)


def iris_with(**changes: Any) -> bytes:
    """The valid iris contract with some top-level keys replaced (None removes one)."""
    document = {**IRIS, **changes}
    return yaml.safe_dump({k: v for k, v in document.items() if v is not None}, sort_keys=False).encode()


def alias_bomb(levels: int = 9) -> bytes:
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return ("\n".join(lines) + f"\ninputs: *a{levels - 1}\n").encode()


# (what is wrong, the contract's bytes, a fragment the message must contain)
BROKEN_CONTRACTS: list[tuple[str, bytes, str]] = [
    ("not YAML", b"inputs: [sepal_length, {type: number", "is not valid YAML"),
    ("YAML alias bomb", alias_bomb(), "uses a YAML alias"),
    ("over 1 MiB", b"# padding\n" * (MAX_CONTRACT_BYTES // 10 + 1) + IRIS_CONTRACT.encode(), "limit"),
    ("empty file", b"", "is empty"),
    ("only whitespace", b"  \n\n\t\n", "is empty"),
    ("not UTF-8", "inputs: {größe: {type: number}}".encode("latin-1"), "not UTF-8"),
    ("UTF-16", IRIS_CONTRACT.encode("utf-16"), "not UTF-8"),
    ("not a mapping", b"- sepal_length\n- petal_width\n", "must be a mapping"),
    ("two YAML documents", IRIS_CONTRACT.encode() + b"---\ninputs: {}\n", "expected a single document"),
    ("a Python object tag", b"inputs: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
     "could not determine a constructor"),
    ("duplicate keys", IRIS_CONTRACT.encode() + b"task: regression\n", "has the key 'task' twice"),
    ("unknown top-level key", iris_with(outptus={"prediction": {"type": "integer"}}), "outptus: unknown key"),
    ("unknown field key", iris_with(inputs={**IRIS["inputs"], "petal_width": {"type": "number", "minimun": 0}}),
     "inputs.petal_width.minimun: unknown key"),
    ("unknown field type", iris_with(inputs={**IRIS["inputs"], "petal_width": {"type": "float64"}}),
     "inputs.petal_width.type"),
    ("wrong value type", iris_with(inputs={**IRIS["inputs"], "petal_width": {"type": "number", "minimum": "zero"}}),
     "inputs.petal_width.minimum"),
    ("inputs not a mapping", iris_with(inputs=["sepal_length", "petal_width"]), "inputs: Input should be a valid"),
    ("example breaking its own schema", iris_with(examples=[{**IRIS["examples"][0], "sepal_length": "five"}]),
     "examples[0] breaks the inputs schema: sepal_length: expected number"),
    ("example with an unknown field", iris_with(examples=[{**IRIS["examples"][0], "colour": "blue"}]),
     "colour: unknown field"),
    ("NaN example without allow_nan", b"inputs: {x: {type: number, example: .nan}}\n", "NaN and infinity"),
    ("infinite bound", b"inputs: {x: {type: number, maximum: .inf}}\n", "finite"),
    ("minimum above maximum", b"inputs: {x: {type: number, minimum: 5, maximum: 1}}\n", "greater than maximum"),
    ("labels without classification", iris_with(task="regression"), "labels are only meaningful"),
    ("thousands of fields", ("inputs:\n" + "".join(f"  f{i}: {{type: number}}\n" for i in range(2000))).encode(),
     "at most 1000"),
    ("deeply nested", b"inputs: " + b"[" * 5_000 + b"]" * 5_000 + b"\n", "nested too deeply"),
    ("a 5000-digit number", b"inputs: {x: {type: integer, example: " + b"9" * 5000 + b"}}\n",
     "a value that cannot be read"),
    ("an impossible date", b"inputs: {x: {type: string, example: 2023-02-30}}\n", "a value that cannot be read"),
    ("a 10,000-character unknown key", IRIS_CONTRACT.encode() + b"? " + b"k" * 10_000 + b"\n: 1\n", "unknown key"),
    ("field name with a newline", b'inputs: {"a\\nkind: Secret": {type: number}}\n', "String should match pattern"),
    ("YAML injection in a resource quantity",
     iris_with(serving={"resources": {"requests": {"cpu": "1\nkind: Secret"}}}), "serving.resources.requests.cpu"),
    ("absurd replica count", iris_with(serving={"replicas": 100_000}), "serving.replicas"),
    ("YAML injection in the scratch size", iris_with(serving={"scratch_size": "2Gi\nkind: Secret"}),
     "serving.scratch_size"),
    ("unsupported contract version", iris_with(version=2), "version"),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("case", "data", "fragment"), BROKEN_CONTRACTS, ids=[c[0] for c in BROKEN_CONTRACTS])
def test_broken_contract_is_refused_with_a_message_saying_what_is_wrong(case: str, data: bytes, fragment: str) -> None:
    with pytest.raises(ContractError) as refused:
        parse_contract(data)
    assert fragment in str(refused.value), str(refused.value)
    assert len(str(refused.value)) <= 1000 and "\n" not in str(refused.value), "short enough for a tag, one line"


def test_the_unbroken_iris_contract_parses() -> None:
    contract = parse_contract(IRIS_CONTRACT.encode())
    assert list(contract.inputs) == ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_a_contract_that_disagrees_with_the_model_signature_is_reported_field_by_field() -> None:
    contract = parse_contract(iris_with(inputs={**IRIS["inputs"], "petal_width": {"type": "string"}}, examples=[]))
    signature = [{"name": name, "type": "double", "required": True} for name in IRIS["inputs"]]
    assert signature_mismatches(contract, signature) == [
        "petal_width: contract says string, model signature says double"]


@pytest.mark.parametrize("columns", [
    [{"name": ["sepal_length"], "type": "double"}],
    [{"name": "sepal_length", "type": {"nested": "double"}}],
    [{"name": None, "type": "double"}, {"type": "long"}],
], ids=["list as a name", "mapping as a type", "no name"])
def test_hostile_signature_columns_are_reported_not_crashed_on(columns: list[dict[str, Any]]) -> None:
    problems = signature_mismatches(parse_contract(IRIS_CONTRACT.encode()), columns)
    assert problems and all(isinstance(problem, str) for problem in problems)


def test_a_derived_contract_takes_nan_where_the_example_has_it_and_leaves_out_rows_that_do_not_fit() -> None:
    signature = [{"name": "age", "type": "double", "required": False}, {"name": "visits", "type": "long"}]
    example = [{"age": float("nan"), "visits": 1}, {"age": None, "visits": 2}, {"age": "old", "visits": 3},
               {"visits": 4.5}, {"age": 40.0}, {"age": 41.0, "visits": 5, "extra": 1}, {"age": 42.0, "visits": 6}]

    contract = contract_from_signature(signature, example)

    assert contract.inputs["age"].allow_nan and not contract.inputs["visits"].allow_nan
    assert [row["visits"] for row in contract.examples] == [1, 2, 6], "a string, a float, a missing, an extra: out"
    assert not contract_from_signature(signature, [{"age": 1.0, "visits": 1}]).inputs["age"].allow_nan


def tensor(dtype: Any = "float64", shape: Any = (-1, 4)) -> list[dict[str, Any]]:
    """A signature's inputs as MLflow writes them for a model logged with a NumPy input example."""
    return [{"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}}]


def test_a_tensor_signature_derives_one_field_per_value_with_the_saved_rows_as_examples() -> None:
    contract = contract_from_signature(tensor("int32", [-1, 3]), [[1, 2, 3], [4, 5, 6], [7, 8]])

    assert {name: spec.type.value for name, spec in contract.inputs.items()} == {
        "x0": "integer", "x1": "integer", "x2": "integer"}
    assert contract.examples == [{"x0": 1, "x1": 2, "x2": 3}, {"x0": 4, "x1": 5, "x2": 6}], "a short row is dropped"
    assert list(contract_from_signature(tensor("bool", [-1]), [True]).inputs) == ["x0"]


def test_a_contract_over_a_tensor_must_list_one_required_field_per_value_of_a_fitting_type() -> None:
    iris = parse_contract(IRIS_CONTRACT.encode())
    assert signature_mismatches(iris, tensor()) == []
    assert signature_mismatches(iris, tensor(shape=[-1, 5])) == [
        "the contract has 4 inputs but the model takes a float64 tensor of shape (-1, 5), 5 value(s) per instance; "
        "list one input per value, in the tensor's order"]
    assert signature_mismatches(iris, tensor("int64")) == [
        f"{name}: contract says number, model signature says int64" for name in IRIS["inputs"]]
    optional = parse_contract(iris_with(inputs={**IRIS["inputs"], "petal_width": {"type": "number", "required": False}},
                                        examples=[]))
    assert signature_mismatches(optional, tensor()) == [
        "petal_width: optional in the contract, but the model's tensor needs every value"]


def test_a_tensors_dtype_narrows_the_contracts_ranges_and_a_range_it_cannot_hold_is_a_mismatch() -> None:
    contract = parse_contract(b"inputs:\n  a: {type: integer, minimum: 0}\n  b: {type: integer, maximum: 1e6}\n")
    narrowed = within_tensor_range(contract, TensorInput("int8", (-1, 2)))

    assert (narrowed.inputs["a"].minimum, narrowed.inputs["a"].maximum) == (0, 127)
    assert (narrowed.inputs["b"].minimum, narrowed.inputs["b"].maximum) == (-128, 127)
    assert within_tensor_range(contract, TensorInput("int64", (-1, 2))) == contract, "the schema's own int64 limits"
    assert signature_mismatches(contract, tensor("int8", [-1, 2])) == []
    assert signature_mismatches(parse_contract(b"inputs:\n  a: {type: integer, minimum: 1000}\n"),
                                tensor("int8", [-1])) == [
        "a: the contract's range is outside what int8 holds (-128 to 127)"]


@pytest.mark.parametrize(("inputs", "described"), [
    (tensor(shape=[-1, 28, 28]), "a float64 tensor of shape (-1, 28, 28)"),
    (tensor(shape=[-1, -1]), "a float64 tensor of shape (-1, -1)"),
    (tensor(shape=[-1, 10**9]), "a float64 tensor of shape (-1, 1000000000)"),
    (tensor(shape=[-1, *[2] * 63]), "a float64 tensor of shape (-1, 2, 2, 2, 2, 2, …)"),
    (tensor("str"), "a str tensor of shape (-1, 4)"),
    (tensor("object", [-1]), "an object tensor of shape (-1,)"),
    ([*tensor("uint8", [-1, 28, 28, 3]), *tensor()], None),
], ids=["an image", "any width", "a billion values", "sixty-four dimensions", "strings", "objects",
        "an image among others, unnamed"])
def test_a_tensor_signature_no_row_of_fields_can_fill_is_served_without_fields(
        inputs: list[dict[str, Any]], described: str | None) -> None:
    if described is None:  # MLflow logs no signature of several unnamed tensors either
        with pytest.raises(ContractError, match="2 inputs with tensors among them"):
            contract_from_signature(inputs)
        return
    contract = contract_from_signature(inputs, [[1.0] * 4])

    assert contract.inputs == {} and contract.examples == [], "no example row fits no fields"
    assert described in contract.description and "POST it to invocations" in contract.description
    assert len(contract.description) < 400
    assert signature_mismatches(contract, inputs) == []
    assert "cannot be given as fields; leave inputs out" in signature_mismatches(parse_contract(
        IRIS_CONTRACT.encode()), inputs)[0]


@pytest.mark.parametrize(("inputs", "fragment"), [
    (tensor(shape=list(range(10_000))), "no readable shape ([0, 1, 2"),
    (tensor(shape=[-1, *[2] * 64]), "no readable shape"),
    (tensor(shape=[-1, 0]), "no readable shape"),
    (tensor(shape=[]), "no readable shape"),
    (tensor(["float64"]), "whose dtype is no NumPy dtype name"),
    (tensor("float64\n- injected: true"), "whose dtype is no NumPy dtype name"),
    (tensor(shape="(-1, 4)"), "no readable shape"),
    ([{"type": "tensor", "tensor-spec": "float64"}], "no readable shape"),
    ([*tensor(), *tensor()], "2 inputs with tensors among them"),
], ids=["ten thousand dimensions", "sixty-five dimensions", "a dimension of 0", "no dimension", "a list as dtype",
        "a dtype with a newline", "a string as shape", "a string as spec", "two tensors"])
def test_a_tensor_signature_that_cannot_be_read_is_refused_saying_how_to_serve_it(
        inputs: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(ContractError) as refused:
        contract_from_signature(inputs)
    message = str(refused.value)
    assert fragment in message and "pandas DataFrame input example" in message, message
    assert len(message) < 400 and "\n" not in message
    assert signature_mismatches(parse_contract(IRIS_CONTRACT.encode()), inputs) == [message]


# --- through a real pass -------------------------------------------------------------------------

# Seventeen kinds through a real pass (the table above covers every kind without one).
PASS_CASES = [case for case in BROKEN_CONTRACTS if case[0] in {
    "not YAML", "YAML alias bomb", "over 1 MiB", "empty file", "not UTF-8", "a Python object tag", "duplicate keys",
    "unknown top-level key", "unknown field type", "wrong value type", "example breaking its own schema",
    "NaN example without allow_nan", "labels without classification", "thousands of fields", "deeply nested",
    "a 5000-digit number"}]
PASS_CASES.append(("signature mismatch", iris_with(inputs={"petal_colour": {"type": "string"}}, examples=[],
                                                   labels=None, task="other"),
                   "disagrees with the model signature"))


@pytest.mark.usefixtures("mlflow_server")
def test_every_broken_contract_fails_its_own_model_in_one_pass_and_the_healthy_model_still_deploys(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    broken = {f"{model_name}-{index}": (case, fragment) for index, (case, _, fragment) in enumerate(PASS_CASES)}
    for (name, _), (_, data, _) in zip(broken.items(), PASS_CASES, strict=True):
        log_iris(name, kind="tree", contract=data, tags=production)  # a tree: trains in milliseconds
    healthy = f"{model_name}-healthy"
    log_iris(healthy, kind="tree", tags=production)

    report = reconcile_once(make_deps())

    assert (report.found, report.deployed, report.failed) == (len(broken) + 1, 1, len(broken)), report.failures
    for name, (case, fragment) in broken.items():
        found = tags(name)
        assert found["deployment_status"] == "failed", case
        assert fragment in found["deployment_message"], (case, found["deployment_message"])
    assert tags(healthy)["deployment_status"] == "deployed"
    assert set(kube.objects("deployments", namespace)) == {model_slug(healthy)}
    assert reconcile_once(make_deps()).failed == 0, "permanent failures are not retried until the inputs change"
