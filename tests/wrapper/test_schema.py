"""Contract to request schema, OpenAPI 3.0 and settings: pure functions, table-driven, hostile input included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from model_wrapper.config.settings import SettingsError, WrapperSettings, load_settings
from model_wrapper.contract.spec import parse_contract
from model_wrapper.errors import InvalidInput, MalformedRequest, PayloadTooLarge, WrapperError, field_path
from model_wrapper.http.openapi import to_openapi30
from model_wrapper.http.swagger import swagger_page
from model_wrapper.predict.schema import INT64_MAX, build_schema

CONTRACT = parse_contract(b"""
title: Loans
task: classification
inputs:
  "income (EUR)": {type: number, minimum: 0, description: Yearly income}
  age: {type: integer, minimum: 18, maximum: 120}
  region: {type: string, enum: [north, south]}
  member: {type: boolean, required: false}
  score: {type: number, allow_nan: true, required: false}
labels: ["no", "yes"]
examples:
  - {"income (EUR)": 30000, age: 40, region: north}
""")
COLUMNS = ["age", "income (EUR)", "region", "member", "score"]
SCHEMA = build_schema(CONTRACT, COLUMNS, max_batch=3, title="Loans", classes=2)


def _body(**instance: Any) -> bytes:
    base = {"income (EUR)": 1.5, "age": 30, "region": "south"}
    return json.dumps({"instances": [{**base, **instance}]}).encode()


def test_rows_come_out_in_the_models_column_order_with_absent_optionals_as_none() -> None:
    assert SCHEMA.rows(_body(member=True)) == [(30, 1.5, "south", True, None)]


@pytest.mark.parametrize(("instance", "field"), [
    ({"age": 17}, "instances[0].age"),
    ({"age": 30.5}, "instances[0].age"),
    ({"age": "30"}, "instances[0].age"),
    ({"age": True}, "instances[0].age"),
    ({"age": INT64_MAX + 1}, "instances[0].age"),
    ({"income (EUR)": -1}, "instances[0].income (EUR)"),
    ({"region": "east"}, "instances[0].region"),
    ({"member": "yes"}, "instances[0].member"),
    ({"member": 1}, "instances[0].member"),
    ({"surprise": 1}, "instances[0].surprise"),
])
def test_each_contract_constraint_is_a_422_naming_the_field(instance: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        SCHEMA.rows(_body(**instance))
    assert [detail["field"] for detail in caught.value.details] == [field]


def test_nan_is_accepted_only_where_the_contract_allows_it() -> None:
    allowed = SCHEMA.rows(b'{"instances": [{"income (EUR)": 1, "age": 30, "region": "north", "score": NaN}]}')
    assert allowed[0][4] != allowed[0][4]
    with pytest.raises(InvalidInput, match="finite"):
        SCHEMA.rows(b'{"instances": [{"income (EUR)": NaN, "age": 30, "region": "north"}]}')


@pytest.mark.parametrize(("body", "error"), [
    (b"", MalformedRequest), (b"nul", MalformedRequest), (b"[" * 10_000, MalformedRequest),
    (b'{"instances": [' + b'{"income (EUR)": 1, "age": 30, "region": "north"},' * 3 + b'{}]}', PayloadTooLarge),
    (b'"instances"', InvalidInput), (b'{"instances": null}', InvalidInput),
])
def test_bodies_that_are_not_a_batch_of_instances_get_the_right_status(body: bytes, error: type[WrapperError]) -> None:
    with pytest.raises(error):
        SCHEMA.rows(body)


def test_a_422_lists_at_most_twenty_problems_and_counts_the_rest() -> None:
    schema = build_schema(CONTRACT, COLUMNS, max_batch=100, title="Loans")
    body = json.dumps({"instances": [{"age": "x"}] * 30}).encode()

    with pytest.raises(InvalidInput) as caught:
        schema.rows(body)

    assert len(caught.value.details) == 20
    assert "more" in caught.value.message


def test_the_published_schemas_carry_types_bounds_enums_descriptions_and_examples() -> None:
    request = to_openapi30(SCHEMA.request_model.model_json_schema(ref_template="#/components/schemas/{model}"))
    instance = request["$defs"]["Instance"]

    assert instance["required"] == ["age", "income (EUR)", "region"]
    assert instance["additionalProperties"] is False
    age = instance["properties"]["age"]
    assert (age["type"], age["minimum"], age["maximum"]) == ("integer", 18, 120)
    assert age["example"] == 69, "no example in the contract: the middle of its range, never Swagger's 0"
    assert instance["properties"]["income (EUR)"]["description"] == "Yearly income"
    assert instance["properties"]["region"]["enum"] == ["north", "south"]
    assert instance["properties"]["member"] == {"type": "boolean", "nullable": True, "default": None,
                                                "title": "Member"}
    assert request["properties"]["instances"]["maxItems"] == 3
    assert request["example"] == {"instances": CONTRACT.examples}
    response = to_openapi30(SCHEMA.response_model.model_json_schema())
    assert response["properties"]["labels"]["items"]["enum"] == ["no", "yes"]
    assert "default" not in response["properties"]["probabilities"]


def test_json_schema_2020_idioms_become_openapi_30() -> None:
    converted = to_openapi30({"anyOf": [{"type": "integer"}, {"type": "null"}], "const": 3, "examples": [1, 2],
                              "type": "integer"})

    assert converted == {"type": "integer", "nullable": True, "enum": [3], "example": 1}


def test_a_whole_document_built_from_the_contract_is_valid_openapi_30() -> None:
    components = {}
    request = SCHEMA.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(request.pop("$defs"))
    components["PredictRequest"] = request
    document = to_openapi30({
        "openapi": "3.0.3", "info": {"title": "Loans", "version": "1"},
        "paths": {"/loans/api/predict": {"post": {
            "requestBody": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/PredictRequest"}}}},
            "responses": {"200": {"description": "ok"}}}}},
        "components": {"schemas": components},
    })

    validate(document)


@pytest.mark.parametrize(("loc", "path"), [(("instances", 0, "age"), "instances[0].age"), ((), "(body)"),
                                           (("instances",), "instances")])
def test_field_paths_read_as_a_client_would_write_them(loc: tuple[Any, ...], path: str) -> None:
    assert field_path(loc) == path


def test_a_hostile_title_cannot_inject_markup_into_the_swagger_page() -> None:
    page = swagger_page(title='</title><script>alert(1)</script>', openapi_url="/m/api/openapi.json",
                        assets="/m/api/assets")

    assert "<script>alert(1)" not in page
    assert "&lt;/title&gt;" in page


@pytest.mark.parametrize(("env", "words"), [
    ({"MODEL_VERSION": "1", "MODEL_SOURCE": "models:/m/1"}, "MODEL_NAME is required"),
    ({"MODEL_NAME": "m", "MODEL_VERSION": "1", "MODEL_SOURCE": "http://example.org/m"}, "MODEL_SOURCE must start with"),
    ({"MODEL_NAME": "m", "MODEL_VERSION": "1", "MODEL_SOURCE": "models:/m/1", "WORKERS": "0"}, "WORKERS"),
    ({"MODEL_NAME": "m", "MODEL_VERSION": "1", "MODEL_SOURCE": "models:/m/1", "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"MODEL_NAME": "m", "MODEL_VERSION": "1", "MODEL_SOURCE": "models:/m/1", "MAX_BATCH": "-1"}, "MAX_BATCH"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], words: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WrapperSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    with pytest.raises(SettingsError, match=words):
        load_settings(env)


def test_settings_default_the_slug_from_the_name_and_never_show_secrets() -> None:
    settings = load_settings({"MODEL_NAME": "Iris Model", "MODEL_VERSION": "3", "MODEL_SOURCE": "models:/m-1",
                              "API_KEYS": " k1-secret , k2-secret ,", "AWS_SECRET_ACCESS_KEY": "aws-secret"})

    assert settings.prefix.startswith("/iris-model-") and settings.prefix.endswith("/api/")
    assert settings.key_list() == [b"k1-secret", b"k2-secret"]
    assert not {"k1-secret", "k2-secret", "aws-secret"} & set(repr(settings).replace("'", " ").split())
    assert "k1-secret" not in repr(settings) and "aws-secret" not in repr(settings)
    assert {"aws-secret", "k1-secret", "k2-secret"} <= set(settings.secrets())
