"""The contract against the model's MLflow signature: a contract derived from a signature when none was
logged, the mismatches that fail a deployment, and the tensor inputs that cannot be fields.

Pure, like `model_wrapper.contract.spec`: no MLflow import (signatures arrive as the plain dicts of
`MLmodel`'s `signature.inputs`), no I/O.
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from model_wrapper.contract.spec import (
    HOW_TO_ADD,
    MAX_EXAMPLES,
    MAX_FIELDS,
    Contract,
    ContractError,
    FieldSpec,
    FieldType,
    contract_from_dict,
    printable,
)

_MLFLOW_TYPES = {
    "double": FieldType.number,
    "float": FieldType.number,
    "long": FieldType.integer,
    "integer": FieldType.integer,
    "string": FieldType.string,
    "boolean": FieldType.boolean,
    # MLflow reads both from JSON strings: binary as base64, datetime as ISO 8601.
    "binary": FieldType.string,
    "datetime": FieldType.string,
}
_STRING_FORMATS = {"binary": "base64-encoded bytes", "datetime": "an ISO 8601 date and time, e.g. 2024-05-01T12:00:00"}
_TENSOR_TYPES = {
    **{f"float{bits}": FieldType.number for bits in (16, 32, 64)},
    **{f"{sign}int{bits}": FieldType.integer for sign in ("", "u") for bits in (8, 16, 32, 64)},
    "bool": FieldType.boolean,
}
# The values each narrow dtype holds (int64 and float64 are the schema's own limits).
_TENSOR_BOUNDS: dict[str, tuple[float, float]] = {
    "float16": (-65504.0, 65504.0),
    "float32": (-3.4028234663852886e38, 3.4028234663852886e38),
    **{f"int{bits}": (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) for bits in (8, 16, 32)},
    **{f"uint{bits}": (0.0, 2.0**bits - 1) for bits in (8, 16, 32, 64)},
}
# A dtype as NumPy names it (float32, str, object, <U5, datetime64[ns]); NumPy arrays have at most 64 dimensions.
_DTYPE_NAME = re.compile(r"^[A-Za-z0-9_<>|=\[\]]{1,40}$")
MAX_DIMENSIONS = 64
_RELOG = "log the model with a pandas DataFrame input example (named columns) to serve it"
HOW_TO_INVOKE = "POST it to invocations in MLflow's tensor format ({\"inputs\": ...} or {\"instances\": ...})"


@dataclass(frozen=True)
class TensorInput:
    """One tensor a model takes: an instance is a row of n values when its shape is (-1,) or (-1, n)
    and its values numbers or booleans (`fields_problem` says when not)."""

    dtype: str
    """A NumPy dtype name, e.g. float32 (or str, object: tensors that have no fields)."""
    shape: tuple[int, ...]
    named: bool = False
    """MLflow hands a named tensor to the model as {name: array}, an unnamed one as the array."""
    name: str = ""
    """The tensor's name in a signature of several named tensors."""

    @property
    def width(self) -> int:
        return self.shape[1] if len(self.shape) == 2 else 1

    @property
    def field_type(self) -> FieldType:
        return _TENSOR_TYPES[self.dtype]

    @property
    def field_names(self) -> list[str]:
        """The names a derived contract gives the values of a row."""
        if self.name:
            return [self.name] if len(self.shape) == 1 else [f"{self.name}_{index}" for index in range(self.width)]
        return [f"x{index}" for index in range(self.width)]

    def fields_problem(self) -> str | None:
        """Why an instance of this tensor is not a row of named values, or None when it is."""
        if self.dtype not in _TENSOR_TYPES:
            return f"{self.describe()}, whose values are not numbers or booleans"
        if not (self.shape == (-1,) or (len(self.shape) == 2 and self.shape[0] == -1 and self.shape[1] > 0)):
            return f"{self.describe()}, and only shapes (-1,) and (-1, n) are rows of named values"
        if self.width > MAX_FIELDS:
            return f"{self.describe()}: more than {MAX_FIELDS} values per instance"
        return None

    @property
    def json_type(self) -> str | None:
        """The JSON type of one value (strings for str and bytes tensors), None when any value goes."""
        if self.dtype in _TENSOR_TYPES:
            return _TENSOR_TYPES[self.dtype].value
        return "string" if self.dtype in ("str", "bytes") or self.dtype.lstrip("<>|=")[:1] in ("U", "S") else None

    def describe(self) -> str:
        sizes = ", ".join(map(str, self.shape[:6])) + (", …" if len(self.shape) > 6 else "," * (len(self.shape) == 1))
        article = "an" if self.dtype[:1] in "aeiouAEIOU" else "a"
        return f"{article} {self.dtype} tensor of shape ({sizes})"


def signature_tensors(signature_inputs: list[dict[str, Any]]) -> list[TensorInput] | None:
    """The tensors a tensor signature takes, in the order their values fill an instance's fields
    (one tensor, or several named ones); None for a column signature. ContractError for tensors
    that cannot be fields (`tensors_without_fields` serves those) or cannot be read."""
    tensors = _signature_tensors(signature_inputs)
    if tensors is None:
        return None
    if (problem := _fields_problem(tensors)) is not None:
        raise ContractError(f"the model takes {problem}; {_RELOG}")
    # One tensor's values are x0 … x(n-1), named or not.
    return [dataclasses.replace(tensors[0], name="")] if len(tensors) == 1 else tensors


def tensors_without_fields(signature_inputs: list[dict[str, Any]]) -> list[TensorInput] | None:
    """The tensors of a signature whose instances cannot be given as fields (an image, a string
    tensor, several variable dimensions, or several named tensors one of which is such): the model
    is served through `invocations` only. None for any other signature; ContractError for a
    signature that cannot be read."""
    tensors = _signature_tensors(signature_inputs)
    return tensors if tensors is not None and _fields_problem(tensors) is not None else None


def describe_tensors(tensors: list[TensorInput]) -> str:
    return ", ".join(_describe(t) for t in tensors)


def _signature_tensors(signature_inputs: list[dict[str, Any]]) -> list[TensorInput] | None:
    """Every tensor of a tensor signature, read but not judged; None for a column signature.
    ContractError for what MLflow does not log either (tensors among columns, several tensors
    not all named) and for a spec that cannot be read."""
    tensors = [column for column in signature_inputs if column.get("type") == "tensor"]
    if not tensors:
        return None
    named = all(isinstance(column.get("name"), str) and column.get("name") for column in signature_inputs)
    if len(signature_inputs) != 1 and not (len(tensors) == len(signature_inputs) and named):
        raise ContractError(f"the model signature has {len(signature_inputs)} inputs with tensors among them; "
                            f"the wrapper serves one table, one tensor or several named tensors; {_RELOG}")
    return [_tensor(column) for column in signature_inputs]


def _fields_problem(tensors: list[TensorInput]) -> str | None:
    for tensor in tensors:
        if (problem := tensor.fields_problem()) is not None:
            return f"{tensor.name}: {problem}" if len(tensors) > 1 else problem
    if sum(tensor.width for tensor in tensors) > MAX_FIELDS:
        return f"more than {MAX_FIELDS} values per instance ({describe_tensors(tensors)})"
    return None


def _tensor(column: dict[str, Any]) -> TensorInput:
    spec = column.get("tensor-spec")
    dtype, shape = (spec.get("dtype"), spec.get("shape")) if isinstance(spec, dict) else (None, None)
    if not isinstance(shape, list | tuple) or not all(isinstance(size, int) and (size == -1 or size > 0)
                                                      for size in shape) or not 1 <= len(shape) <= MAX_DIMENSIONS:
        shown = printable(repr(shape), 60)
        raise ContractError(f"the model signature's tensor has no readable shape ({shown}); {_RELOG}")
    name = column.get("name")
    tensor = TensorInput(printable(str(dtype), 40), tuple(shape), named=bool(name),
                         name=printable(name, 100) if isinstance(name, str) else "")
    if not isinstance(dtype, str) or not _DTYPE_NAME.match(dtype):
        raise ContractError(f"the model takes {tensor.describe()}, whose dtype is no NumPy dtype name; {_RELOG}")
    return tensor


def contract_from_signature(
    signature_inputs: list[dict[str, Any]], input_example: Sequence[Any] | None = None,
    signature_outputs: list[dict[str, Any]] | None = None,
) -> Contract:
    """Derive a contract from an MLflow signature and (optionally) its input example: records
    ({column: value}) for a column signature, rows of values for tensors. Tensors that cannot be
    fields give a contract without inputs. One output column or tensor gives the prediction's type."""
    derived = _from_signature(signature_inputs, input_example)
    if derived.outputs or (output := output_type(signature_outputs)) is None:
        return derived
    return derived.model_copy(update={"outputs": {"prediction": FieldSpec(type=output)}})


def output_type(signature_outputs: list[dict[str, Any]] | None) -> FieldType | None:
    """The type of each prediction when the signature has one output (a column, or a tensor of one value per
    row), else None: then the API says nothing rather than a type the model may not return."""
    if not signature_outputs or len(signature_outputs) != 1:
        return None
    output = signature_outputs[0]
    if output.get("type") == "tensor":
        spec = output.get("tensor-spec") or {}
        shape = list(spec.get("shape") or [])
        one_per_row = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
        return _TENSOR_TYPES.get(str(spec.get("dtype"))) if one_per_row else None
    return _MLFLOW_TYPES.get(str(output.get("type")))


def _from_signature(signature_inputs: list[dict[str, Any]], input_example: Sequence[Any] | None) -> Contract:
    if (without := tensors_without_fields(signature_inputs)) is not None:
        return contract_from_dict({"description": f"Derived from the MLflow model signature "
                                                  f"({describe_tensors(without)}). Its inputs cannot be given "
                                                  f"as fields, so there is no predict: {HOW_TO_INVOKE}."})
    tensors = signature_tensors(signature_inputs)
    if tensors is not None:
        names = [name for tensor in tensors for name in tensor.field_names]
        inputs: dict[str, dict[str, Any]] = {
            name: {"type": tensor.field_type.value} for tensor in tensors for name in tensor.field_names}
        rows = [row if isinstance(row, list) else [row] for row in input_example or []]
        singles = {name for tensor in tensors if tensor.dtype == "float32" for name in tensor.field_names}
        examples = [{name: shortest_float32(v) if name in singles else v for name, v in zip(names, row, strict=True)}
                    for row in rows if len(row) == len(names)]
        description = f"Derived from the MLflow model signature ({describe_tensors(tensors)})."
    else:
        inputs = {}
        for column in signature_inputs:
            name, kind = column.get("name"), column.get("type")
            if not isinstance(name, str) or not name or not isinstance(kind, str) or kind not in _MLFLOW_TYPES:
                raise ContractError(
                    f"the model signature has an input ({name or 'unnamed'}, type {kind}) that cannot be "
                    f"described without a contract; {HOW_TO_ADD}"
                )
            inputs[name] = {"type": _MLFLOW_TYPES[kind].value, "required": column.get("required", True)}
            if kind in _STRING_FORMATS:
                inputs[name]["description"] = f"{kind}: {_STRING_FORMATS[kind]}"
        singles = {str(c.get("name")) for c in signature_inputs if c.get("type") == "float"}
        examples = [{name: shortest_float32(v) if name in singles else v for name, v in row.items()}
                    for row in input_example or [] if isinstance(row, dict)]
        description = "Derived from the MLflow model signature."
        # A NaN in the example (missing values, which MLflow saves as NaN) shows the model takes NaN there.
        for row in examples:
            for name, value in row.items():
                if isinstance(value, float) and math.isnan(value) and inputs.get(name, {}).get("type") == "number":
                    inputs[name]["allow_nan"] = True
    derived = contract_from_dict({"description": description, "inputs": inputs})
    # The example only illustrates: rows that do not fit the signature are left out, never fatal.
    fitting = [row for row in examples if not derived.instance_problems(row)][:MAX_EXAMPLES]
    return contract_from_dict({"description": description, "inputs": inputs, "examples": fitting})


def _describe(tensor: TensorInput) -> str:
    return f"{tensor.name}: {tensor.describe()}" if tensor.name else tensor.describe()


def shortest_float32(value: Any) -> Any:
    """A float32 as its shortest decimal (5.1, not the 5.099999904632568 MLflow saves it as), for examples
    people read in Swagger; the value is the same float32 either way."""
    if not isinstance(value, float) or not math.isfinite(value) or abs(value) > 3.4e38:
        return value
    single = struct.unpack("f", struct.pack("f", value))[0]
    for digits in range(1, 10):
        text = f"{single:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            return float(text)
    return value


def signature_mismatches(contract: Contract, signature_inputs: list[dict[str, Any]]) -> list[str]:
    """Where the contract's inputs disagree with the model's MLflow signature."""
    try:
        without = tensors_without_fields(signature_inputs)
        tensors = signature_tensors(signature_inputs) if without is None else None
    except ContractError as e:
        return [str(e)]
    if without is not None:
        return [f"the contract has {len(contract.inputs)} inputs, but the model takes {describe_tensors(without)}, "
                "which cannot be given as fields; leave inputs out of the contract (the model is served through "
                "invocations)"] if contract.inputs else []
    if not contract.inputs:
        return ["the contract has no inputs; list the model's inputs (only a model whose tensors cannot be "
                "given as fields goes without)"]
    if tensors is not None:
        return _tensor_mismatches(contract, tensors)
    columns = {str(c["name"]): c for c in signature_inputs if c.get("name")}
    problems = [f"{name}: in the contract but not in the model signature" for name in contract.inputs
                if name not in columns]
    for name, column in columns.items():
        spec = contract.inputs.get(name)
        kind = column.get("type")
        expected = _MLFLOW_TYPES.get(kind) if isinstance(kind, str) else None  # MLmodel files are untrusted too
        if spec is None:
            if column.get("required", True):
                problems.append(f"{name}: required by the model signature but missing from the contract")
        elif expected is not None and not _compatible(spec.type, expected):
            problems.append(f"{name}: contract says {spec.type.value}, model signature says {column.get('type')}")
    return problems


def within_tensor_range(contract: Contract, tensors: TensorInput | list[TensorInput]) -> Contract:
    """The contract with each input's bounds narrowed to what its tensor's dtype holds, so that a
    value NumPy would turn into infinity (1e39 as float32) or refuse (300 as int8) is a 422 naming
    the field."""
    dtypes = _field_dtypes(tensors if isinstance(tensors, list) else [tensors])
    inputs = {}
    for (name, spec), dtype in zip(contract.inputs.items(), dtypes, strict=False):
        if dtype in _TENSOR_BOUNDS:
            low, high = _TENSOR_BOUNDS[dtype]
            spec = spec.model_copy(update={"minimum": low if spec.minimum is None else max(spec.minimum, low),
                                           "maximum": high if spec.maximum is None else min(spec.maximum, high)})
        inputs[name] = spec
    return contract.model_copy(update={"inputs": inputs}) if inputs != contract.inputs else contract


def _field_dtypes(tensors: list[TensorInput]) -> list[str]:
    return [tensor.dtype for tensor in tensors for _ in range(tensor.width)]


def _tensor_mismatches(contract: Contract, tensors: list[TensorInput]) -> list[str]:
    width = sum(tensor.width for tensor in tensors)
    if len(contract.inputs) != width:
        takes = describe_tensors(tensors)
        return [f"the contract has {len(contract.inputs)} inputs but the model takes {takes}, "
                f"{width} value(s) per instance; list one input per value, in the tensor's order"]
    problems = []
    for (name, spec), dtype in zip(contract.inputs.items(), _field_dtypes(tensors), strict=True):
        if not _compatible(spec.type, _TENSOR_TYPES[dtype]):
            problems.append(f"{name}: contract says {spec.type.value}, model signature says {dtype}")
        if not spec.required:
            problems.append(f"{name}: optional in the contract, but the model's tensor needs every value")
        low, high = _TENSOR_BOUNDS.get(dtype, (-math.inf, math.inf))
        if (spec.minimum is not None and spec.minimum > high) or (spec.maximum is not None and spec.maximum < low):
            problems.append(f"{name}: the contract's range is outside what {dtype} holds ({low:g} to {high:g})")
    return problems


def _compatible(declared: FieldType, signature: FieldType) -> bool:
    # An integer field feeding a double column is safe; the other way round truncates.
    return declared == signature or (declared == FieldType.integer and signature == FieldType.number)
