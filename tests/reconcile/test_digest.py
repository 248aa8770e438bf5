"""The inputs digest: what lets a steady-state pass skip rendering every live model.

Two releases with the same digest must render the same manifests, so every input that reaches a
manifest (the release, the contract's serving section, the templates, the settings that shape the
objects) must move the digest; the digest rides in each manifest's annotations and so in the spec
hash. Pure: no peers.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from model_wrapper.contract.spec import Serving
from watcher.config.settings import load_settings
from watcher.render.manifests import INPUTS_DIGEST, SPEC_HASH, TEMPLATES_DIR, Release, Renderer

BASE: dict[str, Any] = {"mlflow_tracking_uri": "http://mlflow.example.org:5000",
                        "service_builder_host_name": "models.example.org"}
RELEASE = Release(name="iris", version=3, source="models:/m-0123", run_id="run-1", slug="iris")


def renderer(**overrides: Any) -> Renderer:
    return Renderer(load_settings(**{**BASE, **overrides}))


def test_the_same_inputs_give_the_same_digest_and_the_same_manifests() -> None:
    one, other = renderer(), renderer()
    assert one.inputs_digest(RELEASE) == other.inputs_digest(replace(RELEASE))
    assert one.render(RELEASE).manifests == other.render(RELEASE).manifests


@pytest.mark.parametrize("changed", [
    replace(RELEASE, name="iris2"), replace(RELEASE, version=4), replace(RELEASE, source="models:/m-9"),
    replace(RELEASE, run_id=None), replace(RELEASE, slug="iris-2"),
    replace(RELEASE, serving=Serving(replicas=3)),
    replace(RELEASE, serving=Serving.model_validate({"resources": {"limits": {"memory": "2Gi"}}})),
    replace(RELEASE, serving=Serving(scratch_size="8Gi")),
], ids=["name", "version", "source", "run-id", "slug", "replicas", "resources", "scratch-size"])
def test_every_release_input_moves_the_digest(changed: Release) -> None:
    ours = renderer()
    assert ours.inputs_digest(changed) != ours.inputs_digest(RELEASE)
    assert ours.render(changed).spec_hash != ours.render(RELEASE).spec_hash


@pytest.mark.parametrize("setting", [
    {"model_wrapper_image": "registry.example.org/model-wrapper:2"}, {"k8s_name_space": "other"},
    {"service_builder_host_name": "ml.example.org"}, {"default_replicas": 2},
    {"rollout_timeout_seconds": 900},  # reaches progressDeadlineSeconds, though the fingerprint omits it
    {"mlflow_s3_endpoint_url": "http://minio.example.org:9000"},
    {"network_policy": False}, {"metrics_namespace": "monitoring"}, {"ingress_namespace": "traefik"},
    {"network_policy_extra_sources": "cidr:10.0.0.0/8"}, {"egress_policy": True}, {"default_cpu_limit": "2"},
    {"inference_log_sample": 0.1}, {"inference_log_prefix": "logs"}, {"inference_log_bucket": "inference-logs"},
    {"default_scratch_size": "8Gi"},
], ids=lambda setting: next(iter(setting)))
def test_a_setting_that_shapes_the_manifests_moves_the_digest(setting: dict[str, Any]) -> None:
    assert renderer(**setting).inputs_digest(RELEASE) != renderer().inputs_digest(RELEASE)


def test_a_template_change_moves_the_digest(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    service = templates / "service.yaml.j2"
    service.write_text(service.read_text() + "\n# a comment changes no object, but the digest must not guess\n")
    settings = load_settings(**BASE)
    assert Renderer(settings, templates).inputs_digest(RELEASE) != Renderer(settings).inputs_digest(RELEASE)


def test_each_manifest_carries_the_digest_inside_its_spec_hash() -> None:
    ours = renderer()
    rendered = ours.render(RELEASE)
    for manifest in rendered.manifests:
        notes = manifest["metadata"]["annotations"]
        assert notes[INPUTS_DIGEST] == ours.inputs_digest(RELEASE)
        assert notes[SPEC_HASH] == rendered.spec_hash


def scratch(rendered_deployment: dict[str, Any]) -> str:
    (tmp,) = [v for v in rendered_deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp"]
    return str(tmp["emptyDir"]["sizeLimit"])


def test_the_scratch_space_is_the_contracts_else_the_setting_and_only_a_changed_setting_moves_the_fingerprint() -> None:
    contract_asks = replace(RELEASE, serving=Serving(scratch_size="20Gi"))

    assert scratch(renderer().render(RELEASE).deployment) == "2Gi"
    assert scratch(renderer(default_scratch_size="8Gi").render(RELEASE).deployment) == "8Gi"
    assert scratch(renderer(default_scratch_size="8Gi").render(contract_asks).deployment) == "20Gi"
    assert renderer(default_scratch_size="8Gi").scratch_bytes(contract_asks) == 20 << 30
    default = load_settings(**BASE).fingerprint()
    assert load_settings(**BASE, default_scratch_size="2Gi").fingerprint() == default, "no churn on the default"
    assert load_settings(**BASE, default_scratch_size="8Gi").fingerprint() != default, "a raise retries failures"

