"""Registered-model names become Kubernetes names and URL paths: DNS-1035, at most 63, stable, distinct.

Names come from the registry, so they are untrusted: whatever a name holds, the rendered
manifests are exactly a Deployment, a Service and an Ingress that pass the strict Kubernetes
schemas, and the name reaches the pod unchanged. Pure: no peers.
"""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_wrapper.contract.naming import MAX_SLUG, model_slug
from watcher.config.settings import load_settings
from watcher.errors import Permanent
from watcher.render.manifests import MODEL_NAME, Release, Renderer, validate_manifest

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
HOSTILE = [
    'x"\nkind: Secret',
    "x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen}",
    "a: b\nc: d",
    "{{ settings.aws_secret_access_key }}",
    "!!python/object/apply:os.system ['id']",
    "&anchor *anchor",
    "name\u2028kind: Secret",
    "\x85next line",
    "🦜 parrot model",
    "'; DROP TABLE models; --",
    "\\u0000 escaped",
    "x" * 300,
    "",
]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(load_settings(mlflow_tracking_uri="http://mlflow.example.org:5000",
                                  service_builder_host_name="models.example.org"))


def render(renderer: Renderer, name: str, source: str = "models:/m-0123", run_id: str | None = "run") -> list[dict]:
    release = Release(name=name, version=3, source=source, run_id=run_id, slug=model_slug(name))
    return list(renderer.render(release).manifests)


def assert_exactly_our_objects(manifests: list[dict], name: str, source: str) -> None:
    slug = model_slug(name)
    assert [m["kind"] for m in manifests] == ["Deployment", "Service", "Ingress", "NetworkPolicy"]
    for manifest in manifests:
        assert manifest["metadata"]["name"] == slug
        assert manifest["metadata"]["annotations"][MODEL_NAME] == name
        assert all(LABEL_VALUE.match(value) and len(value) <= 63 for value in manifest["metadata"]["labels"].values())
    env = {item["name"]: item.get("value") for item in manifests[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODEL_NAME"] == name and env["MODEL_SOURCE"] == source and env["MODEL_SLUG"] == slug
    assert manifests[2]["spec"]["rules"][0]["http"]["paths"][0]["path"] == f"/{slug}/api"


# --- the slug itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "slug"), [
    ("iris", "iris"),
    ("iris-classifier-2", "iris-classifier-2"),
    ("a" * 63, "a" * 63),
])
def test_a_name_that_already_is_a_dns_label_is_its_own_slug(name: str, slug: str) -> None:
    assert model_slug(name) == slug


@pytest.mark.parametrize("name", ["Iris Model", "iris_model", "2nd-model", "Modèle Iris", "a" * 64, "-iris-", "a--b",
                                  "日本語", "", "___"])
def test_any_other_name_gets_a_valid_label_with_a_hash_suffix(name: str) -> None:
    slug = model_slug(name)
    assert DNS_1035.match(slug) and len(slug) <= MAX_SLUG
    assert re.search(r"-[0-9a-f]{8}$", slug)


def test_names_that_reduce_to_the_same_text_get_distinct_slugs() -> None:
    names = ["Iris Model", "iris model", "iris-model", "iris_model", "IRIS-MODEL", "iris  model", "iris.model"]
    assert len({model_slug(name) for name in names}) == len(names)


def test_a_name_spelled_like_another_names_slug_gets_a_slug_of_its_own() -> None:
    # "iris-model-<hash of 'Iris Model'>" is a valid label; used as it is it would take Iris Model's name.
    taken = model_slug("Iris Model")
    assert model_slug(taken) != taken
    assert model_slug("model-2024-deadbeef") != "model-2024-deadbeef"


def test_long_names_sharing_a_prefix_get_distinct_slugs_of_at_most_63() -> None:
    prefix = "cardiology-readmission-risk-" * 5
    slugs = [model_slug(prefix + suffix) for suffix in ("a", "b", "")]
    assert len(set(slugs)) == 3 and all(len(slug) <= MAX_SLUG for slug in slugs)


def test_slug_is_stable_across_calls_and_processes() -> None:
    # A fixed value: a slug that changed between releases would move every endpoint.
    assert model_slug("Iris Model") == "iris-model-" + __import__("hashlib").sha256(b"Iris Model").hexdigest()[:8]


@settings(max_examples=400)
@given(st.text())
def test_every_name_gives_a_dns_1035_label_of_at_most_63(name: str) -> None:
    slug = model_slug(name)
    assert DNS_1035.match(slug), slug
    assert len(slug) <= MAX_SLUG
    assert model_slug(name) == slug


@settings(max_examples=300)
@given(st.text(), st.text())
def test_different_names_never_share_a_slug(first: str, second: str) -> None:
    if first != second:
        assert model_slug(first) != model_slug(second)


# --- rendering untrusted names ------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_render_exactly_our_four_valid_objects_carrying_the_name_verbatim(
    renderer: Renderer, name: str
) -> None:
    assert_exactly_our_objects(render(renderer, name), name, "models:/m-0123")


def test_a_name_trying_to_add_a_secret_yields_no_secret(renderer: Renderer) -> None:
    manifests = render(renderer, 'x"\nkind: Secret')
    dumped = yaml.safe_dump_all(manifests)
    assert len(list(yaml.safe_load_all(dumped))) == len(manifests) == 4
    assert "Secret" not in {m["kind"] for m in manifests}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=0, max_size=300), source=st.text(max_size=200), run_id=st.none() | st.text(max_size=40))
def test_any_registry_values_render_to_valid_manifests_that_keep_them_verbatim(
    renderer: Renderer, name: str, source: str, run_id: str | None
) -> None:
    # render() validates every manifest against the strict schemas; a failure raises Permanent.
    assert_exactly_our_objects(render(renderer, name, source, run_id), name, source)


def test_strict_validation_rejects_a_field_the_schema_does_not_know() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "iris"},
               "spec": {"ports": [{"port": 80}], "clusterIPs": ["10.0.0.1"], "portz": []}}
    with pytest.raises(Permanent, match=r"Service is invalid at spec: .*'portz'"):
        validate_manifest(service)
