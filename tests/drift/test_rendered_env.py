"""The watcher tells each model's Deployment where to write its inference log, so that `drift` reads
where the wrappers write; with the defaults it renders nothing new (manifests keep their digest). Pure."""

from __future__ import annotations

from typing import Any

from watcher.config.settings import load_settings
from watcher.render.manifests import Release, Renderer

RELEASE = Release(name="iris", version=3, source="models:/m-0123", run_id="run-1", slug="iris")


def _env(**settings: Any) -> dict[str, str]:
    rendered = Renderer(load_settings(mlflow_tracking_uri="http://mlflow.example.org:5000", **settings)).render(RELEASE)
    container = rendered.deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def test_the_inference_log_settings_reach_every_model_s_deployment() -> None:
    env = _env(inference_log_sample=0.1, inference_log_prefix="team/logs", inference_log_bucket="inference-logs")

    assert (env["INFERENCE_LOG_SAMPLE"], env["INFERENCE_LOG_PREFIX"], env["INFERENCE_LOG_BUCKET"]) == (
        "0.1", "team/logs", "inference-logs")


def test_with_the_defaults_no_inference_log_variable_is_rendered() -> None:
    assert not [name for name in _env() if name.startswith("INFERENCE_LOG_")]
