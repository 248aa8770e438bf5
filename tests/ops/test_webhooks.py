"""The webhook fast path: signature, freshness and replay checks, which events matter, and the real thing.

The end-to-end tests run a real `mlflow server` started with the webhook settings, the receiver on
a real uvicorn (loopback, free port) beside the polling loop, and kmock as the cluster. Polling is
set to an hour, so whatever is deployed after the start-up pass came through a webhook.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.webhooks.delivery import _generate_hmac_signature

from devstack.models import LoggedModel
from devstack.servers import LocalMlflow, free_port, wait_http
from model_wrapper.contract.naming import model_slug
from tests.ops.conftest import WEBHOOK_SECRET
from tests.ops.support import (
    delivery,
    in_background,
    new_version,
    passes,
    post,
    scrape,
    status_is,
    tag_event,
    tags_of,
    wait_until,
)
from tests.peers import KubernetesPeer
from watcher.config.settings import Settings, load_settings
from watcher.decide.types import Selector
from watcher.entry.webhooks import (
    OWN_TAGS,
    PATH,
    Deliveries,
    create_app,
    receiver_url,
    register,
    serve,
    sign,
    verify,
    wanted_model,
)
from watcher.errors import Permanent, Rejected

NOW = 1_800_000_000.0


def _headers(body: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: float = NOW, delivery_id: str = "d-1"
             ) -> dict[str, str]:
    stamp = str(int(timestamp))
    return {"x-mlflow-delivery-id": delivery_id, "x-mlflow-timestamp": stamp,
            "x-mlflow-signature": _generate_hmac_signature(secret, delivery_id, stamp, body.decode())}


# --- verification (pure) -------------------------------------------------------------------------


def test_our_signature_is_the_one_mlflow_computes() -> None:
    assert sign("s3cret", "id-1", "1700000000", '{"a": 1}') == _generate_hmac_signature("s3cret", "id-1",
                                                                                        "1700000000", '{"a": 1}')


def test_an_authentic_fresh_delivery_is_verified_and_its_id_returned() -> None:
    body = b'{"entity": "model_version_tag"}'
    assert verify(_headers(body), body, secret=WEBHOOK_SECRET, now=NOW + 30, tolerance=300) == "d-1"


def test_any_of_several_signatures_may_match_as_during_a_secret_rotation() -> None:
    body = b"{}"
    headers = _headers(body)
    headers["x-mlflow-signature"] = "v1,bm9wZQ== " + headers["x-mlflow-signature"]
    assert verify(headers, body, secret=WEBHOOK_SECRET, now=NOW, tolerance=300) == "d-1"


def _without(name: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda headers: {key: value for key, value in headers.items() if key != name}


@pytest.mark.parametrize(("change", "body", "outcome"), [
    (_without("x-mlflow-signature"), b"{}", "unsigned"),
    (_without("x-mlflow-timestamp"), b"{}", "unsigned"),
    (_without("x-mlflow-delivery-id"), b"{}", "unsigned"),
    (lambda h: {**h, "x-mlflow-signature": "v1,AAAA"}, b"{}", "forged"),
    (lambda h: {**h, "x-mlflow-signature": h["x-mlflow-signature"][3:]}, b"{}", "forged"),
    (lambda h: {**h, "x-mlflow-signature": "v1,é\u00ff"}, b"{}", "forged"),
    (lambda h: {**h, "x-mlflow-delivery-id": "d-2"}, b"{}", "forged"),
    (lambda h: h, b'{"tampered": true}', "forged"),
    (lambda h: {**h, "x-mlflow-timestamp": str(int(NOW) - 301)}, b"{}", "stale"),
    (lambda h: {**h, "x-mlflow-timestamp": str(int(NOW) + 301)}, b"{}", "stale"),
    (lambda h: {**h, "x-mlflow-timestamp": "²"}, b"{}", "stale"),
    (lambda h: {**h, "x-mlflow-timestamp": "soon"}, b"{}", "stale"),
])
def test_unsigned_forged_tampered_and_stale_deliveries_are_refused_with_401(
    change: Callable[[dict[str, str]], dict[str, str]], body: bytes, outcome: str
) -> None:
    headers = change(_headers(b"{}"))
    with pytest.raises(Rejected) as refused:
        verify(headers, body, secret=WEBHOOK_SECRET, now=NOW, tolerance=300)
    assert (refused.value.status, refused.value.outcome) == (401, outcome)


def test_a_delivery_signed_with_another_secret_is_refused() -> None:
    body = b"{}"
    with pytest.raises(Rejected, match="signature"):
        verify(_headers(body, secret="not-the-secret"), body, secret=WEBHOOK_SECRET, now=NOW, tolerance=300)


def test_a_delivery_id_is_accepted_once_within_the_window_and_memory_stays_bounded() -> None:
    seen = Deliveries(window=300, limit=3)
    assert seen.first_time("a", NOW) and not seen.first_time("a", NOW + 299)
    for name in "bcde":
        assert seen.first_time(name, NOW + 1)
    assert len(seen._seen) <= 3
    later = Deliveries(window=300)
    assert later.first_time("x", NOW) and later.first_time("y", NOW + 400)
    assert list(later._seen) == ["y"], "ids older than the window are forgotten: their timestamps are refused anyway"


# --- which events matter (pure) ------------------------------------------------------------------

TAG = Selector.parse("tag:deploy=production")
ALIAS = Selector.parse("alias:champion")


def _event(kind: str, **data: Any) -> dict[str, Any]:
    entity, action = kind.split(".")
    return {"entity": entity, "action": action, "data": {"name": "iris", **data}}


@pytest.mark.parametrize(("event", "selector", "wanted"), [
    (_event("model_version_tag.set", version="3", key="deploy", value="production"), TAG, ("iris", 3)),
    (_event("model_version_tag.set", version="3", key="deploy", value="staging"), TAG, ("iris", 3)),
    (_event("model_version_tag.deleted", version="3", key="deploy"), TAG, ("iris", 3)),
    (_event("model_version_tag.set", version="3", key="notes", value="x"), TAG, None),
    (_event("model_version_tag.set", version="3", key="Deploy", value="production"), TAG, ("iris", 3)),
    (_event("model_version_tag.set", version="3", key=" deploy ", value="production"), TAG, ("iris", 3)),
    (_event("model_version_alias.created", version="4", alias="Champion"), ALIAS, ("iris", 4)),
    (_event("model_version.created", version="5", tags={"DEPLOY": "production"}), TAG, ("iris", 5)),
    (_event("model_version_tag.set", version="3", key="deploy", value="production"), ALIAS, None),
    (_event("model_version_alias.created", version="4", alias="champion"), ALIAS, ("iris", 4)),
    (_event("model_version_alias.deleted", alias="champion"), ALIAS, ("iris", None)),
    (_event("model_version_alias.created", version="4", alias="challenger"), ALIAS, None),
    (_event("model_version.created", version="5", tags={"deploy": "production"}), TAG, ("iris", 5)),
    (_event("model_version.created", version="5", tags={}), TAG, None),
    (_event("registered_model.created", tags={}), TAG, None),
    (_event("prompt_version_tag.set", version="1", key="deploy", value="production"), TAG, None),
    ({"entity": "model_version_tag", "action": "set", "data": {"version": "1", "key": "deploy"}}, TAG, None),
    ({"entity": "model_version_tag", "action": "set", "data": ["not", "a", "mapping"]}, TAG, None),
    ({"entity": "model_version_tag", "action": "set"}, TAG, None),
])
def test_only_events_that_can_change_the_selection_ask_for_a_pass(
    event: dict[str, Any], selector: Selector, wanted: tuple[str, int | None] | None
) -> None:
    assert wanted_model(event, selector) == wanted


@pytest.mark.parametrize("key", sorted(OWN_TAGS))
def test_events_about_the_tags_the_watcher_writes_are_ignored_even_if_the_selector_uses_the_key(key: str) -> None:
    assert wanted_model(_event("model_version_tag.set", version="1", key=key, value="x"),
                       Selector("tag", key, "x")) is None


@pytest.mark.parametrize(("given", "expected"), [
    ("http://sb-webhooks.sb.svc.cluster.local:8081", "http://sb-webhooks.sb.svc.cluster.local:8081" + PATH),
    ("http://127.0.0.1:8081/", "http://127.0.0.1:8081" + PATH),
    ("https://hooks.example.org/prefix/in", "https://hooks.example.org/prefix/in"),
])
def test_the_registered_url_gets_the_receiver_path_unless_it_names_one(given: str, expected: str) -> None:
    assert receiver_url(given) == expected


@pytest.mark.parametrize("bad", ["ftp://host/x", "127.0.0.1:8081", "http:///nohost"])
def test_a_receiver_url_that_is_not_http_is_refused(bad: str) -> None:
    with pytest.raises(Exception, match="not an http"):
        receiver_url(bad)


# --- the app, in process -------------------------------------------------------------------------


def _app_settings(**overrides: Any) -> Settings:
    values = {"mlflow_tracking_uri": "http://127.0.0.1:9", "webhook_secret": WEBHOOK_SECRET,
              "selector": "tag:deploy=production", **overrides}
    return load_settings(**values)


def test_the_app_triggers_once_per_authentic_delivery_and_answers_each_refusal_with_its_status() -> None:
    asked: list[str] = []
    client = TestClient(create_app(_app_settings(), asked.append))
    body, headers = delivery(tag_event("iris", 2, "deploy", "production"), WEBHOOK_SECRET)
    assert client.post(PATH, content=body, headers=headers).status_code == 202
    assert client.post(PATH, content=body, headers=headers).status_code == 409  # the same delivery again
    unsigned = delivery(tag_event("iris", 2, "deploy", "production"), None)
    assert client.post(PATH, content=unsigned[0], headers=unsigned[1]).status_code == 401
    stale = delivery(tag_event("iris", 2, "deploy", "production"), WEBHOOK_SECRET, age=301)
    assert client.post(PATH, content=stale[0], headers=stale[1]).status_code == 401
    own = delivery(tag_event("iris", 2, "deployment_status", "deployed"), WEBHOOK_SECRET)
    assert client.post(PATH, content=own[0], headers=own[1]).json() == {"status": "ignored"}
    not_json = b"not json"
    assert client.post(PATH, content=not_json, headers=_headers_now(not_json)).status_code == 400
    huge = json.dumps({"data": "x" * (1 << 20)}).encode()
    assert client.post(PATH, content=huge, headers=_headers_now(huge)).status_code == 413
    assert asked == ["iris"]


def _headers_now(body: bytes) -> dict[str, str]:
    return _headers(body, timestamp=time.time(), delivery_id=f"d-{len(body)}")


def test_the_tolerance_window_is_configurable() -> None:
    asked: list[str] = []
    client = TestClient(create_app(_app_settings(webhook_tolerance_seconds=30), asked.append))
    body, headers = delivery(tag_event("iris", 2, "deploy", "production"), WEBHOOK_SECRET, age=60)
    assert client.post(PATH, content=body, headers=headers).status_code == 401
    assert asked == []


def test_the_receiver_will_not_start_without_a_secret(deps_factory: Callable[..., Any]) -> None:
    settings = _app_settings(webhook_secret=None)
    with pytest.raises(Exception, match="WEBHOOK_SECRET"):
        create_app(settings, lambda model: None)
    assert serve(settings, deps_factory) == 2
    assert register(settings, "http://127.0.0.1:8081") == 2


# --- end to end: a real MLflow server delivers to a real receiver --------------------------------


@contextlib.contextmanager
def _receiving(settings: Settings, deps_factory: Callable[..., Any]) -> Iterator[None]:
    """`serve-webhooks` running, its start-up pass done, and its receiver registered with MLflow."""
    base = f"http://127.0.0.1:{settings.webhook_port}"
    with in_background(serve, settings, deps_factory):
        wait_http(f"{base}/healthz", 30)
        wait_until(lambda: passes(settings.metrics_port, "poll", "ok") == 1, 30, "the start-up pass")
        assert register(settings, base, out=lambda line: None) == 0
        time.sleep(1.5)  # the server caches webhook lists for MLFLOW_WEBHOOK_CACHE_TTL (1 s here)
        yield


def test_a_tag_set_in_mlflow_is_delivered_to_the_receiver_and_deploys_the_model_without_a_poll(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Any], controller: KubernetesPeer,
    namespace: str, model_name: str, production: dict[str, str], iris_files: LoggedModel,
) -> None:
    version = new_version(model_name, iris_files)  # not selected yet: the start-up pass has nothing to do
    settings = make_settings(metrics_port=free_port())
    with _receiving(settings, deps_factory):
        MlflowClient().set_model_version_tag(model_name, version, "deploy", production["deploy"])
        wait_until(status_is(model_name, version, "deployed"), 30, "deployment_status=deployed")
        wait_until(lambda: passes(settings.metrics_port, "webhook", "ok"), 10, "the webhook pass to be counted")
        samples = scrape(settings.metrics_port)
    slug = model_slug(model_name)
    for plural in ("deployments", "services", "ingresses"):
        assert slug in controller.objects(plural, namespace)
    poll = ("service_builder_passes_total", (("outcome", "ok"), ("trigger", "poll")))
    webhook = ("service_builder_passes_total", (("outcome", "ok"), ("trigger", "webhook")))
    assert samples[poll] == 1, "only the start-up pass was a poll"
    assert samples[webhook] >= 1
    assert samples[("service_builder_webhook_events_total", (("outcome", "accepted"),))] >= 1
    written = set(tags_of(model_name, version)) - {"deploy"}
    assert written <= OWN_TAGS, f"the watcher wrote tags its receiver would not ignore: {written - OWN_TAGS}"


def test_a_near_miss_tag_set_in_mlflow_is_told_on_the_version_through_the_webhook_and_never_deployed(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Any], controller: KubernetesPeer,
    namespace: str, model_name: str, production: dict[str, str], iris_files: LoggedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`Deploy=production`: the key differs in case, which a registry search cannot see (MLflow compares tag keys
    exactly), but the event names it."""
    version = new_version(model_name, iris_files)
    settings = make_settings(metrics_port=free_port())
    with _receiving(settings, deps_factory):
        MlflowClient().set_model_version_tag(model_name, version, "Deploy", production["deploy"])
        wait_until(lambda: "Not deployed" in tags_of(model_name, version).get("deployment_message", ""), 30,
                   "the near miss told on the version")
    message = tags_of(model_name, version)["deployment_message"]
    assert f"the tag 'Deploy' = '{production['deploy']}' looks meant for the selector tag:deploy=" in message
    assert f"which needs the tag 'deploy' = '{production['deploy']}' exactly" in message
    assert "deployment_status" not in tags_of(model_name, version)
    assert controller.objects("deployments", namespace) == {}
    assert any("only nearly matches" in r.getMessage() and model_name in r.getMessage() for r in caplog.records)


def test_forged_stale_and_replayed_deliveries_change_nothing(
    make_settings: Callable[..., Settings], deps_factory: Callable[..., Any], controller: KubernetesPeer,
    namespace: str, model_name: str, production: dict[str, str], iris_files: LoggedModel,
) -> None:
    forged_for, replayed_for = f"{model_name}-a", f"{model_name}-b"
    a, b = new_version(forged_for, iris_files), new_version(replayed_for, iris_files)
    settings = make_settings(metrics_port=free_port())
    url = f"http://127.0.0.1:{settings.webhook_port}{PATH}"
    client = MlflowClient()
    with in_background(serve, settings, deps_factory):
        wait_http(f"http://127.0.0.1:{settings.webhook_port}/healthz", 30)
        wait_until(lambda: passes(settings.metrics_port, "poll", "ok") == 1, 30, "the start-up pass")
        for name, version in ((forged_for, a), (replayed_for, b)):  # selected now; no webhook is registered,
            client.set_model_version_tag(name, version, "deploy", production["deploy"])  # so only ours arrive
        about_a = tag_event(forged_for, a, "deploy", production["deploy"])
        assert post(url, *delivery(about_a, None)) == 401
        assert post(url, *delivery(about_a, "guessed-secret")) == 401
        assert post(url, *delivery(about_a, WEBHOOK_SECRET, age=3600)) == 401
        authentic_b = delivery(tag_event(replayed_for, b, "deploy", production["deploy"]), WEBHOOK_SECRET)
        assert post(url, *authentic_b) == 202
        wait_until(status_is(replayed_for, b, "deployed"), 30, f"{replayed_for} deployed")
        client.delete_model_version_tag(replayed_for, b, "deploy")  # a pass over b would now undeploy it
        assert post(url, *authentic_b) == 409
        # An authentic delivery about a, after the replay: once a is deployed, any pass the replay
        # had queued for b would have run before it.
        assert post(url, *delivery(about_a, WEBHOOK_SECRET)) == 202
        wait_until(status_is(forged_for, a, "deployed"), 30, f"{forged_for} deployed")
        wait_until(lambda: passes(settings.metrics_port, "webhook", "ok") == 2, 10, "both webhook passes counted")
        events = scrape(settings.metrics_port)
    assert model_slug(replayed_for) in controller.objects("deployments", namespace), "the replay undeployed b"
    assert tags_of(replayed_for, b)["deployment_status"] == "deployed"
    counts = {dict(labels)["outcome"]: value for (name, labels), value in events.items()
              if name == "service_builder_webhook_events_total"}
    assert counts == {"unsigned": 1, "forged": 1, "stale": 1, "replayed": 1, "accepted": 2}


def test_register_webhook_creates_then_updates_one_webhook(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    said: list[str] = []
    assert register(settings, "http://127.0.0.1:9/", out=said.append) == 0
    assert register(settings, "http://127.0.0.1:10/", out=said.append) == 0
    ours = [hook for hook in MlflowClient().list_webhooks() if hook.name == "service-builder"]
    assert len(ours) == 1 and ours[0].url == "http://127.0.0.1:10" + PATH
    assert {str(event) for event in ours[0].events} >= {"model_version_tag.set", "model_version_alias.created"}
    assert said[0].startswith("created") and said[1].startswith("updated")
    assert WEBHOOK_SECRET not in " ".join(said)


def test_register_webhook_names_the_mlflow_server_settings_a_private_http_receiver_needs(
    mlflow_server: LocalMlflow, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(mlflow_tracking_uri=mlflow_server.tracking_uri)
    with pytest.raises(Permanent, match="MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and MLFLOW_WEBHOOK_ALLOW_PRIVATE"):
        register(settings, "http://127.0.0.1:8081")
