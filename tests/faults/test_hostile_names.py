"""Hostile registered-model names and tag values through a real pass: valid, distinct, harmless objects.

The pure side (every name renders three schema-valid objects; a hypothesis property over names)
is tests/reconcile/test_naming.py. Here the names go through MLflow itself, which already refuses
'/', ':' and '..' (so `../` and `kind: Secret` cannot be registered there; the renderer tests cover
them), and the watcher runs as a process, so its text log is checked too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from devstack.models import log_iris, register_versions
from devstack.servers import LocalMlflow
from model_wrapper.contract.naming import MAX_SLUG, model_slug
from tests.faults.support import PLURALS, run_watcher, tags, watcher_env
from tests.peers import KubernetesPeer
from watcher.clients.registry import Registry
from watcher.config.settings import Settings
from watcher.decide.types import Selector
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
FORGED = {"deployment_status": "deployed", "deployment_name": "kube-system", "deployed": "true",
          "model_endpoint": "http://evil.example.org/", "deployment_message": 'ok"\n---\nkind Secret'}


def hostile_names(token: str) -> list[str]:
    return [
        f"Iris Model With Spaces {token}",
        f"UPPER CASE {token}",
        f"модель ирис {token}",
        f"鸢尾花模型 {token}",
        f"🦜 parrot {token}",
        f"{token}-" + "x" * 300,
        f"{token}-" + "x" * 299 + "y",
        f'evil" {token}\n---\napiVersion v1\nkind Secret',
        f"log\n2026-01-01 00.00.00,000 ERROR forged line {token}",
        f"\x1b[31mred\x1b[0m \u202eevil {token}",
        f"'; DROP TABLE models; -- {token}",
        f"%2e%2e%2f {token}",
        f". . {token}",
        f"iris-model-{token}",  # a valid label: its own slug
        f"Iris Model {token}",  # reduces to the same text: gets a hash suffix
        f"iris_model_{token}",  # and again
    ]


def test_hostile_names_and_forged_tags_deploy_as_valid_distinct_objects_that_carry_the_name_verbatim(
    make_settings: Callable[..., Settings], make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str,
    model_name: str, production: dict[str, str],
) -> None:
    logged = log_iris(model_name, kind="tree")  # one logged model, registered under every name below
    names = hostile_names(namespace[-6:])
    for name in names:
        register_versions(name, logged, tags={**FORGED, **production})

    # Library warnings are not log lines; only the log is checked line by line.
    result = run_watcher(["run-once"], watcher_env(make_settings(), LOG_FORMAT="text", PYTHONWARNINGS="ignore"))

    assert result.returncode == 0, result.stderr
    assert all(LOG_LINE.match(line) for line in result.stderr.splitlines() if line), \
        "a name cannot start a line of its own in the log, nor carry terminal escapes"
    assert "\x1b" not in result.stderr
    slugs = {name: model_slug(name) for name in names}
    assert len(set(slugs.values())) == len(names), "distinct names, distinct objects"
    assert slugs[f"iris-model-{namespace[-6:]}"] == f"iris-model-{namespace[-6:]}"
    for plural in PLURALS:
        assert set(kube.objects(plural, namespace)) == set(slugs.values()), plural
    for name, slug in slugs.items():
        assert DNS_1035.match(slug) and len(slug) <= MAX_SLUG, slug
        _assert_carries_the_name(kube, namespace, name, slug)
        found = tags(name)
        assert found["deployment_status"] == "deployed" and found["deployment_name"] == slug, name
        assert found["model_endpoint"] == f"http://models.example.org/{slug}/api/", "forged tags are overwritten"
    written = {r.resource.plural for r in kube.writes(namespace) if r.resource is not None}
    assert written <= {*PLURALS, "leases"}, "the model's own kinds only"

    report = reconcile_once(make_deps())
    assert report.unchanged == len(names) and report.failed == 0, "stable slugs: nothing to redo"


def test_a_model_is_found_by_its_name_whatever_quotes_the_name_holds(
    mlflow_server: LocalMlflow, model_name: str, production: dict[str, str],
) -> None:
    """`drift NAME`, `retry NAME` and a webhook's pass read one model's versions through a filter on its name,
    and MLflow's filters cannot escape a quote: each such name is still found, and only that model."""
    logged = log_iris(model_name)
    token = model_name[-6:]
    names = [f"O'Brien {token}", f'say "hi" {token}', f"""both ' and " {token}""", f"back\\slash `tick` {token}",
             f"'; DROP TABLE models; -- {token}"]
    for name in [*names, f"OBrien {token}", f"both  and  {token}"]:  # the last two: a quote's removal
        register_versions(name, logged, tags={"deployment_status": "deployed", **production})
        register_versions(name, logged, tags={"deployment_status": "failed"})
    registry = Registry(mlflow_server.tracking_uri)
    selector = Selector("tag", *next(iter(production.items())))

    for name in names:
        assert [(v.name, v.version) for v in registry.with_status(name, "deployed")] == [(name, 1)], name
        assert [(v.name, v.version) for v in registry.with_status(name, "failed")] == [(name, 2)], name
        assert [(v.name, v.version) for v in registry.selected(selector, name)] == [(name, 1)], name


def _assert_carries_the_name(kube: KubernetesPeer, namespace: str, name: str, slug: str) -> None:
    objects: dict[str, dict[str, Any]] = {plural: kube.objects(plural, namespace)[slug] for plural in PLURALS}
    for obj in objects.values():
        assert obj["metadata"]["annotations"]["service-builder.io/model-name"] == name
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == slug
    container = objects["deployments"]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODEL_NAME"] == name and env["MODEL_SLUG"] == slug
    assert objects["ingresses"]["spec"]["rules"][0]["http"]["paths"][0]["path"] == f"/{slug}/api"
    assert objects["services"]["spec"]["selector"]["app.kubernetes.io/instance"] == slug
