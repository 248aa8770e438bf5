"""Optional API keys: predict, invocations and metadata need one; probes, metrics and docs stay open;
the keys never show up in a log line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.models import LoggedModel
from devstack.servers import LocalMlflow
from tests.wrapper.conftest import Served, serve

KEYS = "first-key-4Zq8,second-key-Hh31"
INSTANCE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def locked(iris_model: LoggedModel, mlflow_server: LocalMlflow) -> Iterator[Served]:
    yield from serve(iris_model, mlflow_server, API_KEYS=KEYS, LOG_FORMAT="json", ACCESS_LOG="true")


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"},
                                     {"x-api-key": ""}, {"authorization": "Basic Zmlyc3Qta2V5LTRacTg="},
                                     {"x-api-key": "first-key-4Zq8,second-key-Hh31"}])
def test_predict_without_a_valid_key_gets_401(locked: Served, headers: dict[str, str]) -> None:
    answer = locked.post("predict", {"instances": [INSTANCE]}, headers=headers)

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert "www-authenticate" in answer.headers


@pytest.mark.parametrize("headers", [{"x-api-key": "first-key-4Zq8"}, {"authorization": "Bearer second-key-Hh31"},
                                     {"authorization": "bearer first-key-4Zq8"}])
def test_either_key_in_either_header_is_accepted(locked: Served, headers: dict[str, str]) -> None:
    assert locked.post("predict", {"instances": [INSTANCE]}, headers=headers).status_code == 200
    assert locked.post("invocations", {"instances": [INSTANCE]}, headers=headers).status_code == 200
    assert locked.get("metadata", headers=headers).status_code == 200


def test_invocations_and_metadata_are_protected_too(locked: Served) -> None:
    assert locked.post("invocations", {"instances": [INSTANCE]}).status_code == 401
    assert locked.get("metadata").status_code == 401


def test_probes_metrics_and_the_swagger_page_stay_open(locked: Served) -> None:
    for path in ("health", "ready", "openapi.json", ""):
        assert locked.get(path).status_code == 200, path
    assert locked.client.get(locked.base.replace(f"/{locked.slug}/api/", "/metrics")).status_code == 200


def test_openapi_declares_the_key_so_swagger_ui_can_send_it(locked: Served) -> None:
    document = locked.get("openapi.json").json()

    scheme = document["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    assert document["paths"][f"/{locked.slug}/api/predict"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in document["paths"][f"/{locked.slug}/api/health"]["get"]


def test_no_key_and_no_s3_secret_appear_in_the_log(locked: Served, mlflow_server: LocalMlflow) -> None:
    locked.post("predict", {"instances": [INSTANCE]}, headers={"x-api-key": "first-key-4Zq8"})
    locked.post("predict", {"instances": [INSTANCE]}, headers={"x-api-key": "wrong"})

    log = locked.wrapper.log()
    assert '"level": "INFO"' in log, "LOG_FORMAT=json gives one JSON object per line"
    for secret in [*KEYS.split(","), mlflow_server.client_env()["AWS_SECRET_ACCESS_KEY"]]:
        assert secret not in log
