"""The contract as pydantic models: request validation for `predict` and its OpenAPI schemas.

Built once per model by the predictor. Bodies are validated straight from JSON bytes by a cached
`TypeAdapter` (pydantic-core, no intermediate Python dicts), which also rejects NaN and infinity
unless a field allows them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic_core import PydanticCustomError

from model_wrapper.contract.spec import Contract, FieldSpec, FieldType
from model_wrapper.errors import InvalidInput, MalformedRequest, PayloadTooLarge, field_path

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_PYTHON_TYPES: dict[FieldType, type] = {
    FieldType.number: float, FieldType.integer: int, FieldType.string: str, FieldType.boolean: bool,
}
# How many validation problems one 422 lists; the rest are counted.
MAX_DETAILS = 20


@dataclass(frozen=True)
class RequestSchema:
    """Validates predict bodies and turns them into rows in the model's column order."""

    request_model: type[BaseModel]
    response_model: type[BaseModel]
    columns: tuple[str, ...]
    max_batch: int
    adapter: TypeAdapter[Any]
    _row: Callable[[Any], tuple[Any, ...]]
    has_params: bool = False

    def rows(self, body: bytes) -> list[tuple[Any, ...]]:
        """Validate a `{"instances": [...]}` body; raise a WrapperError naming the field."""
        return self.parse(body)[0]

    def parse(self, body: bytes) -> tuple[list[tuple[Any, ...]], dict[str, Any] | None]:
        """The rows of a `{"instances": [...], "params": {...}}` body and the params it sets (None
        when it sets none); raise a WrapperError naming the field."""
        try:
            request = self.adapter.validate_json(body)
        except ValidationError as e:
            raise _client_error(e, self.max_batch) from None
        except RecursionError:
            raise MalformedRequest("the JSON body is nested too deeply") from None
        row = self._row
        rows = [row(instance) for instance in request.instances]
        if self.has_params and request.params is not None:
            return rows, request.params.model_dump(by_alias=True, exclude_unset=True) or None
        return rows, None


def build_schema(contract: Contract, columns: list[str], *, max_batch: int, title: str,
                 classes: int | None = None, params: list[dict[str, Any]] | None = None) -> RequestSchema:
    """Pydantic models for one contract; `columns` is the order the model expects its inputs,
    `params` the model's params schema (MLflow's `ParamSchema.to_dict()`)."""
    specs = {name: contract.inputs[name] for name in columns}
    fields = {f"f{i}": _field(name, spec) for i, (name, spec) in enumerate(specs.items())}
    instance = create_model(  # type: ignore[call-overload]
        "Instance", __config__=ConfigDict(extra="forbid", strict=True, title="Instance",
                                          json_schema_extra={"description": f"One input of {title}."}),
        **fields,
    )
    examples: Any = [{"instances": contract.examples}] if contract.examples else None
    instances: Any = list[instance]  # type: ignore[valid-type]
    extra: dict[str, Any] = {"params": (_params_model(params), Field(
        default=None, json_schema_extra=_no_default,
        description="The model's parameters for this request; each left out takes its default."))} if params else {}
    request = create_model(
        "PredictRequest", __config__=ConfigDict(extra="forbid", strict=True, title="PredictRequest",
                                                json_schema_extra={"examples": examples} if examples else None),
        instances=(instances, Field(min_length=1, max_length=max_batch,
                                         description="The instances to predict, one object each.")),
        **extra,
    )
    getter = operator.attrgetter(*fields) if len(fields) > 1 else _single(next(iter(fields)))
    return RequestSchema(request, _response_model(contract, classes), tuple(columns), max_batch,
                         TypeAdapter(request), getter, has_params=bool(params))


# MLflow's param types (mlflow.types.schema.DataType) as JSON values: a datetime is an ISO 8601
# string and binary is base64, as MLflow reads them from an `invocations` body.
_PARAM_TYPES: dict[str, tuple[type, str | None]] = {
    "string": (str, None), "boolean": (bool, None), "integer": (int, None), "long": (int, None),
    "float": (float, None), "double": (float, None), "datetime": (str, "date-time"), "binary": (str, "byte"),
}


def _params_model(params: list[dict[str, Any]]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for index, spec in enumerate(params):
        kind, form = _PARAM_TYPES.get(str(spec.get("type")), (Any, None))
        annotation: Any = list[kind] if spec.get("shape") else kind  # type: ignore[valid-type]
        schema_extra: Any = {"format": form} if form else None
        default: Any = spec.get("default")
        fields[f"p{index}"] = (annotation, Field(
            default=default, alias=str(spec["name"]), json_schema_extra=schema_extra,
            description=f"MLflow type {spec.get('type')}{' (a list)' if spec.get('shape') else ''}; "
                        f"default {spec.get('default')!r}"))
    model: type[BaseModel] = create_model(
        "Params", __config__=ConfigDict(extra="forbid", strict=True, title="Params"), **fields)
    return model


def _field(name: str, spec: FieldSpec) -> tuple[Any, Any]:
    kind: Any = Literal[tuple(spec.enum)] if spec.enum else _PYTHON_TYPES[spec.type]
    description = spec.description
    if spec.type == FieldType.integer:
        kind = Annotated[kind, BeforeValidator(_integral)]
        description = f"{description} ({INTEGRAL})" if description else INTEGRAL.capitalize()
    example = spec.example if spec.example is not None else _within_bounds(spec)
    constraints: dict[str, Any] = {"alias": name, "description": description,
                                   "examples": [example] if example is not None else None}
    if spec.type in (FieldType.number, FieldType.integer) and not spec.enum:
        low, high = spec.minimum, spec.maximum
        if spec.type == FieldType.integer:
            # Larger integers cannot reach the model as int64; refuse them here, as a 422.
            low = INT64_MIN if low is None else max(low, INT64_MIN)
            high = INT64_MAX if high is None else min(high, INT64_MAX)
        constraints |= {"ge": low, "le": high}
    if spec.type == FieldType.number:
        constraints["allow_inf_nan"] = spec.allow_nan
    if spec.required:
        return kind, Field(**constraints)
    return kind | None, Field(default=None, **constraints)


def _within_bounds(spec: FieldSpec) -> float | int | None:
    """A Swagger example for a field the contract gives bounds but no example: the middle of its range
    (Swagger UI would show 0, which may be out of range). None without both bounds, or for a dtype's limits."""
    low, high = spec.minimum, spec.maximum
    if spec.enum or low is None or high is None or max(abs(low), abs(high)) > 1e9:
        return None
    middle = (low + high) / 2
    return math.floor(middle) if spec.type == FieldType.integer else middle


INTEGRAL = "an integer; a number without a fractional part, such as 70.0, counts as one, 70.5 is refused"


def _integral(value: Any) -> Any:
    """JSON has one number type: 70.0, from a float column or `json.dumps(70.0)`, is the integer 70. Anything else
    goes on to the strict integer check, which refuses 70.5 naming the field."""
    if type(value) is float and math.isfinite(value):
        if not value.is_integer():
            raise PydanticCustomError("int_fraction", "Input should be an integer; {value} has a fractional part",
                                      {"value": value})
        return int(value)
    return value


def _single(name: str) -> Callable[[Any], tuple[Any, ...]]:
    return lambda instance: (getattr(instance, name),)


def _response_model(contract: Contract, classes: int | None) -> type[BaseModel]:
    outputs = list(contract.outputs.values())
    prediction: Any = _PYTHON_TYPES[outputs[0].type] if len(outputs) == 1 else Any
    described = outputs[0].description if len(outputs) == 1 else None
    fields: dict[str, Any] = {
        "predictions": (list[prediction], Field(description=described or "One prediction per instance, in order.")),
    }
    # Absent rather than null when the model has none: no `default` in the published schema.
    if classes:
        fields["probabilities"] = (list[list[float]], Field(
            default=None, json_schema_extra=_no_default,
            description="Per instance, the probability of each class, in class order."))
    if contract.labels:
        fields["labels"] = (list[Literal[tuple(contract.labels)]], Field(  # type: ignore[misc]
            default=None, json_schema_extra=_no_default, description="Per instance, the name of the predicted class."))
    response: type[BaseModel] = create_model("PredictResponse", __config__=ConfigDict(title="PredictResponse"),
                                             **fields)
    return response


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _client_error(error: ValidationError, max_batch: int) -> Exception:
    problems = error.errors(include_url=False, include_input=False)
    if any(p["type"] == "json_invalid" for p in problems):
        return MalformedRequest(f"the body is not valid JSON: {problems[0]['msg'].removeprefix('Invalid JSON: ')}")
    if any(p["type"] == "too_long" and tuple(p["loc"]) == ("instances",) for p in problems):
        return PayloadTooLarge(f"more than {max_batch} instances in one request; send smaller batches")
    if any(p["type"] == "model_type" and not p["loc"] for p in problems):
        return InvalidInput("the body must be a JSON object like {\"instances\": [{...}]}",
                            [{"field": "(body)", "message": "expected a JSON object"}])
    details = [{"field": field_path(p["loc"]), "message": p["msg"]} for p in problems[:MAX_DETAILS]]
    more = len(problems) - MAX_DETAILS
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
    return InvalidInput(f"invalid input: {summary}" + (f"; and {more} more" if more > 0 else ""), details)
