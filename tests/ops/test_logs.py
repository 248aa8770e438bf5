"""LOG_FORMAT=json: one JSON object per line, name and version on every line about a model, no secret.

Run through the same entry points as production (`main`, the loop, the receiver), with the real
handler writing to the captured stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devstack.models import LoggedModel
from tests.ops.conftest import WEBHOOK_SECRET
from tests.ops.support import delivery, new_version, tag_event
from tests.ops.test_watch import FailsOnce
from tests.peers import KubernetesPeer
from watcher.config.logs import configure_logging, register_secrets
from watcher.config.settings import Settings
from watcher.entry.cli import main
from watcher.entry.loop import run_watch
from watcher.entry.webhooks import PATH, create_app

pytestmark = pytest.mark.usefixtures("root_logging")


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_every_line_of_a_deploying_pass_is_json_and_lines_about_the_model_name_it_and_its_version(
    process_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    controller: KubernetesPeer, model_name: str, production: dict[str, str], iris_files: LoggedModel,
) -> None:
    version = new_version(model_name, iris_files, tags=production)
    for key, value in {**process_env, "LOG_FORMAT": "json"}.items():
        monkeypatch.setenv(key, value)
    assert main(["watch", "--once"]) == 0
    lines = _json_lines(capsys.readouterr().err)
    about = [line for line in lines if f"{model_name} v{version}" in line["message"]]
    assert len(about) >= 2, lines
    assert all(line.get("model") == model_name and line.get("version") == int(version) for line in about), about
    assert all({"time", "level", "name", "message"} <= set(line) for line in lines)
    assert any(line["message"].startswith("pass done: found=1 deployed=1") for line in lines)


def test_a_traceback_with_a_secret_in_it_is_logged_as_json_with_the_secret_masked(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    secret = settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else ""
    register_secrets([secret])
    configure_logging("json")

    class LeaksOnce(FailsOnce):
        def find(self, selector: Any, name: str | None = None) -> Any:  # the pass's one search
            self.failed = True
            raise RuntimeError(f"could not connect with key {secret}")

    def build(settings: Settings, **kwargs: Any) -> Any:
        return deps_factory(settings, registry=LeaksOnce(settings.mlflow_tracking_uri), **kwargs)

    assert run_watch(settings, build, once=True) == 1
    err = capsys.readouterr().err
    failure = next(line for line in _json_lines(err) if line["message"].startswith("pass failed unexpectedly"))
    assert "could not connect with key ***" in failure["exc_info"]
    assert secret not in err


def test_refused_and_accepted_deliveries_log_json_without_secret_or_signature(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from watcher.config.settings import load_settings

    settings = load_settings(mlflow_tracking_uri="http://127.0.0.1:9", webhook_secret=WEBHOOK_SECRET,
                             selector="tag:deploy=production")
    configure_logging("json")
    client = TestClient(create_app(settings, lambda model: None))
    body, headers = delivery(tag_event("iris", 4, "deploy", "production"), WEBHOOK_SECRET)
    tampered = body.replace(b"iris", b"wine")
    assert client.post(PATH, content=tampered, headers=headers).status_code == 401
    assert client.post(PATH, content=body, headers=headers).status_code == 202
    err = capsys.readouterr().err
    lines = [line for line in _json_lines(err) if line["name"] == "watcher.entry.webhooks"]
    assert [line["level"] for line in lines] == ["WARNING", "INFO"]
    assert lines[1]["model"] == "iris" and lines[1]["version"] == 4
    assert WEBHOOK_SECRET not in err and headers["X-MLflow-Signature"].split(",", 1)[1] not in err
