"""The evaluation gate on Kubernetes: a batch/v1 Job runs `python -m model_wrapper evaluate` before the
Deployment is touched. The control plane's Job controller creates the Job's pod and its kubelet really
runs the container (its command, its environment, the S3 Secret it references), so the figures come
from the version's own model. A shuffled-label version is refused with its figures while the live one
keeps serving; a Job that fails says why and is retried; a steady-state pass starts no Job."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable

import pytest
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score

from devstack.models import IRIS_CONTRACT, LoggedModel, iris_frame, log_sklearn_model, register_versions
from model_wrapper.contract.naming import model_slug
from tests.evaluation.conftest import GATE, csv_bytes, good_model, iris_table
from tests.peers import BAD_IMAGE, READY, KubernetesPeer, crash
from watcher.clients.artifacts import model_bytes
from watcher.config.settings import Settings
from watcher.entry.loop import Stop
from watcher.errors import Stopping
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.render.manifests import Renderer, validate_manifest


@pytest.fixture
def s3_secret(kube: KubernetesPeer, namespace: str) -> None:
    """The Secret the model pods (and so the evaluation Job's pod) read their S3 credentials from."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "service-builder-s3", "namespace": namespace},
              "data": {key: base64.b64encode(value.encode()).decode() for key, value in
                       (("AWS_ACCESS_KEY_ID", "devstack-key"), ("AWS_SECRET_ACCESS_KEY", "devstack-secret"),
                        ("credentials", "[default]\naws_access_key_id = devstack-key\n"
                                        "aws_secret_access_key = devstack-secret\n"))}}
    kube.create("api/v1", namespace, secret)


@pytest.fixture
def deps(make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], s3_secret: None) -> Deps:
    return make_deps(make_settings(evaluation_timeout_seconds=300))


def job_requests(kube: KubernetesPeer, namespace: str) -> list[str]:
    """The verbs of every request on Jobs in the namespace, in order (as RBAC names them)."""
    verbs = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}
    return [verbs.get(r.method.value) or ("get" if r.name else "list") for r in kube.requests(namespace)
            if r.resource is not None and r.resource.plural == "jobs"]


def test_a_shuffled_version_is_refused_by_its_job_while_the_live_version_keeps_serving(
    deps: Deps, kube: KubernetesPeer, namespace: str, model_name: str, good_iris: LoggedModel,
    bad_iris: LoggedModel, production: dict[str, str],
) -> None:
    client, slug = MlflowClient(), model_slug(model_name)
    register_versions(model_name, good_iris, tags=production)

    first = reconcile_once(deps)

    assert (first.deployed, first.failed) == (1, 0), first.failures
    assert client.get_model_version(model_name, "1").tags["evaluation_status"] == "passed"
    assert kube.objects("jobs", namespace) == {}  # deleted once read
    live = kube.objects("deployments", namespace)[slug]

    register_versions(model_name, bad_iris, tags=production)
    refused = reconcile_once(deps)

    features, target = iris_frame()
    accuracy = accuracy_score(target, bad_iris.model.predict(features))
    tags = client.get_model_version(model_name, "2").tags
    assert refused.failed == 1 and tags["deployment_status"] == "failed"
    assert tags["deployment_message"].startswith(f"evaluation failed: accuracy {accuracy:.3f} < 0.900 required")
    assert tags["deployment_message"].endswith("(evaluation.csv, 150 rows); version 1 keeps serving")
    assert kube.objects("deployments", namespace)[slug]["spec"] == live["spec"]  # never touched
    assert client.get_model_version(model_name, "1").tags["deployment_status"] == "deployed"
    assert set(job_requests(kube, namespace)) <= {"create", "get", "list", "delete"}  # what the Role grants

    before = len(kube.requests(namespace))
    steady = reconcile_once(deps)

    assert (steady.unchanged, steady.failed) == (1, 0)
    assert [r for r in kube.requests(namespace)[before:] if r.method.value != "GET"] == []  # no write, no Job

    client.delete_model_version_tag(model_name, "2", "deploy")  # v1 selected alone again, as it was
    jobs_before = job_requests(kube, namespace)
    assert reconcile_once(deps).failed == 0
    assert job_requests(kube, namespace) == jobs_before  # it passed before: not evaluated again


def test_the_job_manifest_is_the_deployments_pod_with_a_deadline_and_valid(make_settings: Callable[..., Settings],
                                                                            good_iris: LoggedModel) -> None:
    from watcher.decide.types import VersionInfo
    from watcher.reconcile.actions import release_of
    from watcher.reconcile.gate import evaluation_job

    rendered = Renderer(make_settings()).render(release_of(
        VersionInfo("iris", 3, good_iris.source, good_iris.run_id), "iris"))
    live = VersionInfo("iris", 2, "models:/m-live", "run-live")
    job = evaluation_job(rendered, "0123456789abcdef", live, 600)

    validate_manifest(job)
    pod, deployment_pod = job["spec"]["template"]["spec"], rendered.deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == deployment_pod["securityContext"]
    (container,), (serving,) = pod["containers"], deployment_pod["containers"]
    assert container["env"] == serving["env"] and container["securityContext"] == serving["securityContext"]
    assert container["image"] == serving["image"] and container["resources"] == serving["resources"]
    assert container["command"] == ["python", "-m", "model_wrapper", "evaluate"]
    assert container["args"] == ["--live-source", "models:/m-live", "--live-version", "2", "--live-run-id", "run-live"]
    assert "readinessProbe" not in container and "ports" not in container
    assert (pod["restartPolicy"], job["spec"]["backoffLimit"]) == ("Never", 0)
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "service-builder"
    # The pod must not match the Deployment's selector: the Service would send it traffic.
    selector = rendered.deployment["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert len(job["metadata"]["name"]) <= 63


@pytest.mark.parametrize(("behaviour", "reason"), [
    (crash("MemoryError: cannot allocate 2.1 GiB"),
     "BackoffLimitExceeded: Job has reached the specified backoff limit; container Error, exit code 1; "
     "MemoryError: cannot allocate 2.1 GiB"),
    (BAD_IMAGE, "DeadlineExceeded: Job was active longer than specified deadline"),
])
def test_a_job_that_fails_says_why_and_is_retried(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], s3_secret: None, kube: KubernetesPeer,
    namespace: str, model_name: str, good_iris: LoggedModel, production: dict[str, str], behaviour: object,
    reason: str,
) -> None:
    kube.set_rollout_policy(lambda template: behaviour if "job-name" in template["metadata"]["labels"] else READY)
    deps = make_deps(make_settings(evaluation_timeout_seconds=10))
    register_versions(model_name, good_iris, tags=production)

    report = reconcile_once(deps)

    tags = MlflowClient().get_model_version(model_name, "1").tags
    assert report.failed == 1 and tags["deployment_status"] == "failed"
    assert tags["deployment_message"].startswith(f"the evaluation Job failed ({reason}")
    assert tags["deployment_message"].endswith("; will retry on the next pass")
    assert tags["deployment_attempt"].endswith(" failures=1")  # a cluster fault: counted, not remembered
    assert kube.objects("deployments", namespace) == {} and kube.objects("jobs", namespace) == {}
    created = job_requests(kube, namespace).count("create")

    reconcile_once(deps)

    assert job_requests(kube, namespace).count("create") == created + 1


def test_an_evaluation_job_outlives_a_stopped_pass_and_the_next_pass_waits_for_it_instead_of_starting_over(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], s3_secret: None, kube: KubernetesPeer,
    namespace: str, model_name: str, good_iris: LoggedModel, production: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The CronJob's deadline (or a drain) sends SIGTERM to a pass waiting for its evaluation Job: the Job keeps
    running, and the next pass finds it by name and waits for its result, so a long evaluation ends at last."""
    settings = make_settings(evaluation_timeout_seconds=300)
    register_versions(model_name, good_iris, tags=production)
    stop, outcome = Stop(), []

    def stopped_pass() -> None:
        try:
            reconcile_once(make_deps(settings, stop_requested=stop, sleep=stop.sleep))
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=stopped_pass, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not kube.objects("jobs", namespace) and time.monotonic() < deadline:
        time.sleep(0.05)
    ((name, job),) = kube.objects("jobs", namespace).items()
    stop.set()  # what SIGTERM does (watcher.entry.cli._run_once)
    worker.join(60)

    assert [type(e) for e in outcome] == [Stopping]
    assert kube.objects("jobs", namespace)[name]["metadata"]["uid"] == job["metadata"]["uid"], "the Job runs on"

    with caplog.at_level(logging.INFO, logger="watcher.targets.kubernetes.jobs"):
        report = reconcile_once(make_deps(settings))

    assert (report.deployed, report.failed) == (1, 0), report.failures
    assert f"evaluation Job {name} exists already; waiting for it" in caplog.text
    assert MlflowClient().get_model_version(model_name, "1").tags["evaluation_status"] == "passed"
    assert kube.objects("jobs", namespace) == {}, "deleted once its result was read"


def test_an_evaluation_whose_files_would_overflow_the_scratch_space_fails_before_any_job(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], s3_secret: None, kube: KubernetesPeer,
    namespace: str, model_name: str, production: dict[str, str],
) -> None:
    """The Job runs in the model's pod spec: its /tmp holds the model's files and, logged beside the run's
    contract rather than among them, the evaluation data too."""
    features, _ = iris_frame()
    log_sklearn_model(model_name, good_model(), features, contract=None, run_contract=IRIS_CONTRACT + GATE,
                      run_files={"evaluation.csv": csv_bytes(iris_table())}, pip_requirements=["scikit-learn"],
                      tags=production)
    probe = make_deps(make_settings())
    version = probe.registry.get(model_name, 1)
    assert version is not None
    room = model_bytes(probe.store, probe.registry, version) + 100  # the model fits; the data does not

    report = reconcile_once(make_deps(make_settings(default_scratch_size=str(room))))

    message = MlflowClient().get_model_version(model_name, "1").tags["deployment_message"]
    assert report.failed == 1, report.failures
    assert "the files the evaluation needs (the model, evaluation.csv) are 0.00 GiB" in message, message
    assert f"more than its scratch space ({room}, the pod's /tmp" in message
    assert job_requests(kube, namespace) == [] and kube.objects("deployments", namespace) == {}
