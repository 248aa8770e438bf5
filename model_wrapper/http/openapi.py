"""The wrapper's OpenAPI document: FastAPI's skeleton plus the contract's schemas, as OpenAPI 3.0.

Called once per model by `model_wrapper.http.app` (the document is cached). OpenAPI 3.0 rather than
3.1 because the bundled Swagger UI (4.x) renders 3.0 only; pydantic's JSON Schema is converted.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from model_wrapper.contract.signature import TensorInput, describe_tensors
from model_wrapper.errors import ErrorResponse
from model_wrapper.predict.predictor import Predictor

OPENAPI_VERSION = "3.0.3"
REF_TEMPLATE = "#/components/schemas/{model}"
API_KEY_SCHEME = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                             "description": "One of the keys in the wrapper's API_KEYS."}}
INVOCATIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One of the MLflow scoring-server formats (exactly one of these keys), "
                   "optionally with `params`.",
    "properties": {
        "dataframe_split": {"type": "object", "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "items": {"type": "array", "items": {}}}}},
        "dataframe_records": {"type": "array", "items": {"type": "object"}},
        "instances": {"type": "array", "items": {}},
        "inputs": {},
        "params": {"type": "object"},
    },
}


def build_openapi(routes: list[Any], predictor: Predictor, *, prefix: str, errors: dict[int, str], protected: set[str],
                  secured: bool) -> dict[str, Any]:
    """The whole document for an installed predictor."""
    model = predictor.installed()
    contract = model.contract
    info = (f"{contract.description}\n\nModel **{predictor.name}** version **{predictor.version}** "
            f"served by the Service Builder model wrapper ({model.backend.description}).")
    document = get_openapi(title=contract.title or predictor.name, version=predictor.version,
                           openapi_version=OPENAPI_VERSION, description=info,
                           routes=[r for r in routes if isinstance(r, APIRoute)])
    components = document.setdefault("components", {}).setdefault("schemas", {})
    if model.without_fields:
        _document_tensor_invocations(document, predictor, list(model.without_fields))
    else:
        _document_predict(document, components, predictor, prefix=prefix, errors=errors)
    for item in document["paths"].values():
        operation = item.get("post") or item.get("get") or {}
        if secured and operation.get("operationId") in protected:
            operation["security"] = [{"ApiKey": []}]
    if secured:
        document["components"]["securitySchemes"] = API_KEY_SCHEME
    return to_openapi30(document)


def _document_predict(document: dict[str, Any], components: dict[str, Any], predictor: Predictor, *, prefix: str,
                      errors: dict[int, str]) -> None:
    """`predict` from the contract's fields, and its examples on `invocations` as records."""
    schema, contract = predictor.schema, predictor.installed().contract
    assert schema is not None  # a model with fields has a schema once installed
    request_ref = _add_model(components, schema.request_model)
    response_ref = _add_model(components, schema.response_model)
    error_ref = _add_model(components, ErrorResponse)
    answer: dict[str, Any] = {"schema": response_ref}
    if predictor.example_answer is not None:
        answer["example"] = predictor.example_answer
    document["paths"] = {f"{prefix}predict": {"post": {
        "summary": "Predict", "operationId": "predict",
        "description": "Predict from instances that follow the contract: `{\"instances\": [{field: value, ...}]}`.",
        "requestBody": _json_body(request_ref, examples=_examples(contract.examples)),
        "responses": {"200": {"description": "One prediction per instance", "content": {"application/json": answer}},
                      **{str(status): {"description": text, "content": {"application/json": {"schema": error_ref}}}
                         for status, text in errors.items()}},
    }}, **document["paths"]}
    for path, item in document["paths"].items():
        if path.endswith("/invocations"):
            item["post"]["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": INVOCATIONS_SCHEMA,
                                     "example": {"dataframe_records": contract.examples[:2]}},
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}}


def _document_tensor_invocations(document: dict[str, Any], predictor: Predictor, tensors: list[TensorInput]) -> None:
    """A model whose inputs cannot be fields has no predict: `invocations` documents its tensors,
    with MLflow's saved serving input example and the answer to it."""
    model = predictor.installed()
    named = len(tensors) > 1 or tensors[0].named
    inputs = {"type": "object", "required": [t.name for t in tensors],
              "properties": {t.name: _tensor_schema(t) for t in tensors}} if named else _tensor_schema(tensors[0])
    body: dict[str, Any] = {"schema": {**INVOCATIONS_SCHEMA, "properties": {
        **INVOCATIONS_SCHEMA["properties"], "inputs": {**inputs, "description": f"The model takes "
                                                       f"{describe_tensors(tensors)}: one item per instance."}}}}
    if model.serving_example is not None:
        body["example"] = orjson.loads(model.serving_example)
    for path, item in document["paths"].items():
        if path.endswith("/invocations"):
            operation = item["post"]
            operation["requestBody"] = {"required": True, "content": {"application/json": body}}
            if predictor.example_answer is not None:
                operation["responses"]["200"]["content"] = {"application/json": {"example": predictor.example_answer}}


def _tensor_schema(tensor: TensorInput) -> dict[str, Any]:
    """A tensor as nested JSON arrays, the first dimension the instances."""
    node: dict[str, Any] = {"type": tensor.json_type} if tensor.json_type else {}
    for size in reversed(tensor.shape):
        node = {"type": "array", "items": node, **({"minItems": size, "maxItems": size} if size > 0 else {})}
    return node


def _add_model(components: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    json_schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
    components.update(json_schema.pop("$defs", {}))
    components[model.__name__] = json_schema
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _json_body(ref: dict[str, str], examples: dict[str, Any] | None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": ref}
    if examples:
        media["examples"] = examples
    return {"required": True, "content": {"application/json": media}}


def _examples(instances: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not instances:
        return None
    named = {"all": {"summary": "All the contract's examples", "value": {"instances": instances}}}
    named |= {f"example_{i + 1}": {"summary": f"Example {i + 1}", "value": {"instances": [instance]}}
              for i, instance in enumerate(instances[:5])}
    return named


def to_openapi30(node: Any) -> Any:
    """Rewrite pydantic's JSON Schema 2020-12 idioms as OpenAPI 3.0 (nullable, enum, example)."""
    if isinstance(node, list):
        return [to_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: to_openapi30(value) for key, value in node.items()}
    variants = node.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants:
        rest = [v for v in variants if v != {"type": "null"}]
        node.pop("anyOf")
        node.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
        node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("examples"), list) and _is_schema(node):
        values = node.pop("examples")
        if values:
            node["example"] = values[0]
    return node


def _is_schema(node: dict[str, Any]) -> bool:
    # `examples` is a list only inside schemas; in a media type object it is a map of named examples.
    return any(key in node for key in ("type", "properties", "enum", "anyOf", "$ref", "title", "description"))
