"""The Open Inference Protocol (V2) codec: request tensors to the predictor's rows, its answer to
response tensors, and the model's metadata from its signature (or contract).

Called by the V2 routes in `model_wrapper.http.v2_routes`; transport-free like the predictor it feeds. Column
models take one input per column, as MLServer's MLflow runtime does (`content_type: pd`), tensor
models one input per signature tensor (unnamed: `input-0`); both become the rows `predict` uses, so
the native fast path serves V2 too. Bad input is a `V2Invalid` (400) naming the input and the fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from model_wrapper.errors import MalformedRequest

# MLflow's column types and NumPy's dtypes as the protocol names them (MLServer's mlserver_mlflow.metadata).
COLUMN_TYPES = {"double": ("FP64", "np"), "float": ("FP32", "np"), "long": ("INT64", "np"),
                "integer": ("INT32", "np"), "boolean": ("BOOL", "np"), "string": ("BYTES", "str"),
                "binary": ("BYTES", "base64"), "datetime": ("BYTES", "datetime")}
FIELD_TYPES = {"number": ("FP64", "np"), "integer": ("INT64", "np"), "boolean": ("BOOL", "np"),
               "string": ("BYTES", "str")}
NUMPY_TYPES = {"float64": "FP64", "float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32",
               "int16": "INT16", "int8": "INT8", "uint64": "UINT64", "uint32": "UINT32", "uint16": "UINT16",
               "uint8": "UINT8", "bool": "BOOL", "str": "BYTES", "object": "BYTES", "bytes": "BYTES"}
NUMBERS = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
KNOWN = NUMBERS | {"BOOL", "BYTES"}
# The JSON value types each datatype takes (None: a missing value, which the model's own checks judge).
FLOATS = {"FP16", "FP32", "FP64"}
ALLOWED: dict[str, frozenset[type]] = {
    **dict.fromkeys(NUMBERS - FLOATS, frozenset({int, type(None)})),
    **dict.fromkeys(FLOATS, frozenset({int, float, type(None)})),
    "BOOL": frozenset({bool, type(None)}), "BYTES": frozenset({str, type(None)})}


class V2Invalid(MalformedRequest):
    """A V2 request the model cannot take; the message names the input and what is wrong."""


@dataclass(frozen=True)
class Port:
    """One input (or output) of the model, as V2 metadata describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    content_type: str = "np"
    """MLServer's codec for it (`np`, `str`, `base64`, `datetime`), shown in the metadata."""
    required: bool = True
    column: bool = False
    """A DataFrame column (shape [-1, 1]), rather than a tensor."""

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape),
                "parameters": {"content_type": self.content_type}}


def ports(signature: tuple[dict[str, Any], ...], columns: list[str], field_types: dict[str, str], *,
          prefix: str = "input-") -> list[Port]:
    """The model's inputs (or outputs) from its MLflow signature, or (without one) the contract's fields;
    unnamed ones numbered after `prefix`, as mlserver-mlflow names them."""
    if not signature:
        return [Port(name, FIELD_TYPES[field_types[name]][0], (-1, 1), FIELD_TYPES[field_types[name]][1], column=True)
                for name in columns]
    found = []
    for index, spec in enumerate(signature):
        name = spec.get("name") or f"{prefix}{index}"
        if spec.get("type") == "tensor":
            tensor = spec["tensor-spec"]
            found.append(Port(name, NUMPY_TYPES.get(tensor["dtype"], "BYTES"), tuple(tensor["shape"])))
        else:
            datatype, content_type = COLUMN_TYPES.get(spec["type"], ("BYTES", "pd_json"))
            found.append(Port(name, datatype, (-1, 1), content_type, spec.get("required", True), column=True))
    return found


def model_content_type(signature: tuple[dict[str, Any], ...]) -> str:
    """How mlserver-mlflow decodes a request by default: `pd` for columns, `dict` for named tensors."""
    if not signature or signature[0].get("type") != "tensor":
        return "pd"
    return "dict" if signature[0].get("name") else "np"


def decode(body: bytes, inputs: list[Port]) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """A V2 inference request as rows in the inputs' order (each tensor's row flattened), plus the
    request's `id` and `outputs` as the encoder needs them."""
    request = _object(body)
    given = {str(item.get("name")): item for item in _inputs(request)}
    by_name = {port.name: port for port in inputs}
    if unknown := sorted(set(given) - set(by_name)):
        raise V2Invalid(f"input {unknown[0]!r} is not one the model takes; it takes {', '.join(by_name)}")
    columns: list[list[Any]] = []
    rows = None
    for port in inputs:
        if port.name not in given:
            if port.required:
                raise V2Invalid(f"input {port.name!r} is missing; the model takes {', '.join(by_name)}")
            columns.append([])
            continue
        values, count = _tensor(given[port.name], port)
        if not port.column and len(port.shape) > 1:  # a tensor's rows: the values of each, in row-major order
            values = _rows(values, count)
        if rows is not None and count != rows:
            raise V2Invalid(f"input {port.name!r} has {count} rows where the inputs before it have {rows}")
        rows = count
        columns.append(values)
    per_port = [values or [None] * (rows or 0) for values in columns]  # an optional column left out: None
    if all(port.column or len(port.shape) <= 1 for port in inputs):  # columns: the common case, one value per input
        return list(zip(*per_port, strict=True)), request
    return [tuple(chain.from_iterable(p if isinstance(p, list) else (p,) for p in parts))
            for parts in zip(*per_port, strict=True)], request


def _rows(values: list[Any], count: int) -> list[Any]:
    width = len(values) // count if count else 0
    return [values[start:start + width] for start in range(0, len(values), width or 1)]


def params_of(request: dict[str, Any]) -> dict[str, Any] | None:
    """The request's `parameters` less the protocol's own keys: the model's params, as MLServer passes them."""
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Invalid("'parameters' must be an object")
    return {k: v for k, v in parameters.items() if k not in ("content_type", "headers")} or None


def _object(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise V2Invalid(f"the body is not JSON: {e}") from e
    if not isinstance(request, dict):
        raise V2Invalid("the body must be a JSON object with 'inputs'")
    return request


def _inputs(request: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
        raise V2Invalid("'inputs' must be a non-empty list of tensors, each with name, shape, datatype and data")
    return inputs


def _tensor(item: dict[str, Any], port: Port) -> tuple[list[Any], int]:
    """The input's values (flat, row-major) and its row count, checked against its shape and datatype.
    Every value's type is checked in one pass in C (`set(map(type, ...))`): this runs on every request."""
    name, shape, datatype, data = port.name, item.get("shape"), item.get("datatype"), item.get("data")
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise V2Invalid(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    allowed = ALLOWED.get(str(datatype))
    if allowed is None:
        raise V2Invalid(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(sorted(KNOWN))}")
    if type(data) is not list:
        raise V2Invalid(f"input {name!r}: 'data' must be a list")
    kinds = set(map(type, data))
    values = _flat(data, name) if list in kinds else data
    if len(values) != math.prod(shape):
        raise V2Invalid(f"input {name!r}: shape {shape} holds {math.prod(shape)} values but 'data' has {len(values)}")
    if not _fits(shape, (-1,) if port.column else port.shape):
        raise V2Invalid(f"input {name!r}: shape {shape} does not fit the model's {list(port.shape)} "
                        f"(expected {[shape[0], *port.shape[1:]]}, -1 any)")
    _check_values(values, kinds if values is data else set(map(type, values)), str(datatype), port, allowed)
    return values, shape[0]


def _fits(shape: list[int], wanted: tuple[int, ...]) -> bool:
    if len(wanted) == 1:  # a column (or a 1-d tensor): [n] or [n, 1]
        return len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    return len(shape) == len(wanted) and all(w in (-1, s) for s, w in zip(shape[1:], wanted[1:], strict=True))


def _flat(data: list[Any], name: str) -> list[Any]:
    try:  # the protocol allows row-major nesting; a ragged nesting is not a tensor
        array = np.array(data, dtype=object)
    except ValueError as e:
        raise V2Invalid(f"input {name!r}: 'data' is ragged (its nested lists differ in length)") from e
    if any(isinstance(v, list) for v in array.ravel()):
        raise V2Invalid(f"input {name!r}: 'data' is ragged (its nested lists differ in length)")
    return list(array.ravel())


def _check_values(values: list[Any], kinds: set[type], datatype: str, port: Port, allowed: frozenset[type]) -> None:
    wanted = port.datatype
    if (wanted in NUMBERS) != (datatype in NUMBERS) or (wanted in ("BOOL", "BYTES") and datatype != wanted):
        raise V2Invalid(f"input {port.name!r}: datatype {datatype} where the model takes {wanted}")
    if not kinds <= allowed:
        wrong = next(value for value in values if type(value) not in allowed)
        raise V2Invalid(f"input {port.name!r}: {wrong!r} is not a {datatype} value")


def encode(name: str, version: str, request: dict[str, Any], outputs: dict[str, Any],
           extra: dict[str, Any]) -> bytes:
    """The response: each output as a tensor (1-d answers as [n, 1], as MLServer's NumPy codec gives
    them); those the request named, if it named any, which may include the `extra` ones."""
    wanted = [str(o.get("name")) for o in request.get("outputs") or [] if isinstance(o, dict)]
    outputs = {**outputs, **extra} if wanted else outputs
    if missing := [w for w in wanted if w not in outputs]:
        raise V2Invalid(f"output {missing[0]!r} is not one the model gives; it gives {', '.join(outputs)}")
    answer: dict[str, Any] = {"model_name": name, "model_version": version}
    if "id" in request:
        answer["id"] = request["id"]
    answer["outputs"] = [_output(key, outputs[key]) for key in (wanted or outputs)]
    answer["parameters"] = answer["outputs"][0]["parameters"]
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def _output(name: str, value: Any) -> dict[str, Any]:
    array = np.asarray(value)
    shape = list(array.shape) if array.ndim > 1 else [len(array), 1]
    datatype = NUMPY_TYPES.get(array.dtype.name, "BYTES" if array.dtype.kind in "OSU" else "FP64")
    data = array.ravel().tolist()
    content_type = "str" if datatype == "BYTES" else "np"
    return {"name": name, "shape": shape, "datatype": datatype, "parameters": {"content_type": content_type},
            "data": data}
