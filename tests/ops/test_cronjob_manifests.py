"""The ops install kit in cronjob/: manifests, RBAC and the watcher image, checked without a cluster.

Every manifest is validated against the official Kubernetes schemas in strict mode; the
kustomizations, the CronJob's scheduling and hardening, the Role's least privilege and the
watcher image's Dockerfile and pins are checked as data. Where `kubectl` is installed, its
built-in kustomize renders the kit too.
"""

from __future__ import annotations

import ast
import configparser
import copy
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from watcher.config.settings import load_settings
from watcher.errors import SettingsInvalid

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "cronjob"
KUSTOMIZATIONS = (KIT, KIT / "watch")
EXAMPLE_SECRET = KIT / "examples" / "secret.example.yaml"
DOCKERFILE = KIT / "Dockerfile"
# The oldest and the newest Kubernetes the bundled schemas cover: the kit must suit both.
SCHEMA_VERSIONS = (all_versions()[0], all_versions()[-1])
SECRET_LIKE = re.compile(r"^AWS_|SECRET|KEY|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
# The environment names the brief fixes; K8S_NAME_SPACE comes from the pod's own namespace.
SETTINGS = {"MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "K8S_NAME_SPACE", "SERVICE_BUILDER_HOST_NAME", "MODEL_WRAPPER_IMAGE", "SELECTOR",
            "POLL_INTERVAL_SECONDS", "DEPLOY_TARGET", "LOG_FORMAT"}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "labels", "patches"}
def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifest_files() -> list[Path]:
    files = sorted({*KIT.rglob("*.yaml"), *KIT.rglob("*.yml")})
    return [path for path in files if path.name != "kustomization.yaml"]


def _kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def _applied(directory: Path) -> list[dict[str, Any]]:
    return [doc for name in _kustomization(directory)["resources"] for doc in _documents(directory / name)]


def _all_applied() -> list[dict[str, Any]]:
    return [doc for directory in KUSTOMIZATIONS for doc in _applied(directory)]


def _one(kind: str, directory: Path = KIT) -> dict[str, Any]:
    (found,) = [doc for doc in _applied(directory) if doc["kind"] == kind]
    return found


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    return spec["template"]["spec"]


def _pod_specs() -> dict[str, dict[str, Any]]:
    return {"cronjob": _pod_spec(_one("CronJob")), "watch": _pod_spec(_one("Deployment", KIT / "watch"))}


def _containers() -> list[dict[str, Any]]:
    return [container for spec in _pod_specs().values() for container in spec["containers"]]


def _rules() -> list[dict[str, Any]]:
    return _one("Role")["rules"]


def _requirements(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = str(requirement.specifier)
    return pins


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(word.upper(), rest.strip()) for word, _, rest in (line.strip().partition(" ") for line in
                                                                 text.splitlines() if line.strip())]


def _instructions(name: str) -> list[str]:
    return [arguments for instruction, arguments in _dockerfile() if instruction == name]


# --- every manifest is a valid Kubernetes object ----------------------------------------------


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(KIT)))
def test_every_manifest_passes_strict_kubernetes_schema_validation(path: Path, version: str) -> None:
    documents = _documents(path)
    assert documents, f"{path} holds no Kubernetes object"
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    cronjob = copy.deepcopy(_one("CronJob"))
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, SCHEMA_VERSIONS[-1], strict=True)


# --- the kustomizations ---------------------------------------------------------------------


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(ROOT)))
def test_kustomization_lists_every_manifest_beside_it_and_nothing_missing(directory: Path) -> None:
    kustomization = _kustomization(directory)
    assert set(kustomization) <= KUSTOMIZATION_FIELDS, f"unknown fields {set(kustomization) - KUSTOMIZATION_FIELDS}"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert all((directory / name).is_file() for name in listed), [n for n in listed if not (directory / n).is_file()]
    beside = {p.name for p in directory.glob("*.y*ml") if p.name != "kustomization.yaml"}
    assert beside == set(listed)


def test_the_example_secret_is_never_applied() -> None:
    listed = {(directory / name).resolve()
              for directory in KUSTOMIZATIONS for name in _kustomization(directory)["resources"]}
    assert EXAMPLE_SECRET.resolve() not in listed
    assert EXAMPLE_SECRET.parent != KIT, "kept out of cronjob/ so `kubectl apply -f cronjob/` cannot apply it"
    assert [doc["kind"] for doc in _all_applied() if doc["kind"] == "Secret"] == []


def test_the_example_secret_holds_placeholders_only() -> None:
    secrets = _documents(EXAMPLE_SECRET)
    assert {doc["kind"] for doc in secrets} == {"Secret"}
    for secret in secrets:
        assert "data" not in secret
        for key, value in secret["stringData"].items():
            if key == "credentials":  # an AWS shared credentials file: its values are the placeholders
                parser = configparser.RawConfigParser()
                parser.read_string(value)
                assert {v for section in parser.sections() for v in parser[section].values()} == {"REPLACE_ME"}
                assert set(parser["default"]) == {"aws_access_key_id", "aws_secret_access_key"}
            else:
                assert value == "REPLACE_ME", key


def test_both_installs_use_one_namespace_and_one_watcher_image() -> None:
    cron, watch = (_kustomization(directory) for directory in KUSTOMIZATIONS)
    assert cron["namespace"] == watch["namespace"]
    assert cron["images"] == watch["images"]
    assert all("namespace" not in doc["metadata"] for doc in _all_applied()), "the kustomization sets it"


def test_no_installed_object_looks_like_a_model_the_watcher_manages() -> None:
    # The watcher undeploys objects labelled managed-by=service-builder that no selected model wants.
    labelled = [doc["metadata"]["name"] for doc in _all_applied()
                if (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "service-builder"]
    assert labelled == []


KUBECTL = shutil.which("kubectl")


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_changing_the_kustomize_namespace_moves_every_object_and_the_rolebinding_subject(tmp_path: Path) -> None:
    copy_of_kit = tmp_path / "cronjob"
    shutil.copytree(KIT, copy_of_kit)
    kustomization = copy_of_kit / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("namespace: service-builder", "namespace: ops-tools"))
    rendered = _kustomize(copy_of_kit)
    assert {doc["metadata"]["namespace"] for doc in rendered} == {"ops-tools"}
    (binding,) = [doc for doc in rendered if doc["kind"] == "RoleBinding"]
    assert [subject["namespace"] for subject in binding["subjects"]] == ["ops-tools"]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not installed")
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(ROOT)))
def test_kustomize_output_is_valid_and_names_the_real_watcher_image(directory: Path) -> None:
    rendered = _kustomize(directory)
    assert len(rendered) == len(_applied(directory))
    for document in rendered:
        kubernetes_validate.validate(document, SCHEMA_VERSIONS[-1], strict=True)
    images = {container["image"] for doc in rendered if doc["kind"] in ("CronJob", "Deployment")
              for container in _pod_spec(doc)["containers"]}
    (wanted,) = _kustomization(directory)["images"]
    assert images == {f"{wanted['newName']}:{wanted['newTag']}"}


# --- the CronJob ----------------------------------------------------------------------------


def test_cronjob_runs_one_pass_every_two_minutes_and_never_two_at_once() -> None:
    spec = _one("CronJob")["spec"]
    assert spec["schedule"] == "*/2 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < 120, "a missed run must not start after the next is due"
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1


def test_cronjob_pass_is_bounded_and_retried_by_the_schedule() -> None:
    job = _one("CronJob")["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    assert job["backoffLimit"] == 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_cronjob_deadline_follows_from_the_settings_worst_case_for_one_model() -> None:
    """activeDeadlineSeconds less the grace period is the pass's own deadline (the ConfigMap's
    PASS_DEADLINE_SECONDS), which must leave room for one model whose every wait runs out, as the settings
    compute it from the shipped values: else SIGTERM cuts that model's evaluation or rollout every time."""
    config = _one("ConfigMap")["data"]
    settings = load_settings(**{key.lower(): value for key, value in config.items()})
    job = _one("CronJob")["spec"]["jobTemplate"]["spec"]
    grace = job["template"]["spec"]["terminationGracePeriodSeconds"]

    assert settings.pass_deadline_seconds == job["activeDeadlineSeconds"] - grace
    assert settings.pass_deadline_seconds >= settings.model_worst_case_seconds
    assert settings.model_worst_case_seconds >= settings.evaluation_timeout_seconds + settings.rollout_timeout_seconds
    with pytest.raises(SettingsInvalid, match="PASS_DEADLINE_SECONDS \\(900\\) is shorter than one model's worst"):
        load_settings(**{**{key.lower(): value for key, value in config.items()}, "pass_deadline_seconds": 900})


def test_cronjob_container_runs_the_image_entrypoint_with_run_once() -> None:
    (container,) = _pod_specs()["cronjob"]["containers"]
    assert "command" not in container, "the image's ENTRYPOINT is `python -m watcher`"
    assert container["args"] == ["run-once"]


@pytest.mark.parametrize("workload", ["cronjob", "watch"])
def test_pods_run_as_the_watcher_service_account_with_its_token(workload: str) -> None:
    spec = _pod_specs()[workload]
    assert spec["serviceAccountName"] == _one("ServiceAccount")["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is True


@pytest.mark.parametrize("workload", ["cronjob", "watch"])
def test_pods_are_non_root_with_a_read_only_root_and_a_writable_tmp(workload: str) -> None:
    spec = _pod_specs()[workload]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    empty_dirs = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context.get("privileged", False) is False
        assert context.get("runAsUser", pod["runAsUser"]) != 0
        assert {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"} & empty_dirs


@pytest.mark.parametrize("container", _containers(), ids=lambda c: c["name"])
def test_every_container_has_cpu_and_memory_requests_and_limits(container: dict[str, Any]) -> None:
    resources = container["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, bound


def _secret_mounts(spec: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mount path -> the `secret` volume source mounted there (read-only mounts only)."""
    secrets = {volume["name"]: volume["secret"] for volume in spec.get("volumes", []) if "secret" in volume}
    return {m["mountPath"]: secrets[m["name"]] for m in container.get("volumeMounts", [])
            if m["name"] in secrets and m.get("readOnly") is True}


def _secret_files(spec: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """File path in the container -> (Secret, key) it holds."""
    return {f"{path}/{item['path']}": (source["secretName"], item["key"])
            for path, source in _secret_mounts(spec, container).items() for item in source["items"]}


def _spec_and_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(spec, container) for spec in _pod_specs().values() for container in spec["containers"]]


@pytest.mark.parametrize("container", _containers(), ids=lambda c: c["name"])
def test_no_credential_is_written_into_a_manifest(container: dict[str, Any]) -> None:
    (spec,) = [spec for spec in _pod_specs().values() if container in spec["containers"]]
    for variable in container.get("env", []):
        if SECRET_LIKE.search(variable["name"]) and variable["name"].endswith("_FILE"):
            assert variable["value"] in _secret_files(spec, container), f"{variable['name']} names no mounted Secret"
        elif SECRET_LIKE.search(variable["name"]):
            assert "value" not in variable, variable["name"]
            assert set(variable["valueFrom"]) == {"secretKeyRef"}, variable["name"]
    for source in container.get("envFrom", []):
        assert set(source) <= {"configMapRef", "secretRef"}
    configmaps = [doc for doc in _applied(KIT) if doc["kind"] == "ConfigMap"]
    assert configmaps
    assert [key for cm in configmaps for key in cm["data"] if SECRET_LIKE.search(key)] == []


def test_credentials_reach_the_watcher_as_read_only_files_never_as_variables() -> None:
    for spec, container in _spec_and_containers():
        names = {variable["name"] for variable in container.get("env", [])}
        assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "WEBHOOK_SECRET"}, container["name"]
        assert not [v for v in container.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})]
        assert not [s for s in container.get("envFrom", []) if "secretRef" in s]
        (credentials,) = [v["value"] for v in container["env"] if v["name"] == "AWS_SHARED_CREDENTIALS_FILE"]
        assert _secret_files(spec, container)[credentials] == ("service-builder-s3", "credentials")
        secret_volumes = [m for m in container["volumeMounts"] if m["name"] in
                          {v["name"] for v in spec["volumes"] if "secret" in v}]
        assert all(m.get("readOnly") is True for m in secret_volumes)
        assert all(v["secret"]["defaultMode"] == 0o440 for v in spec["volumes"] if "secret" in v)
    (watch,) = _pod_specs()["watch"]["containers"]
    (webhook,) = [v["value"] for v in watch["env"] if v["name"] == "WEBHOOK_SECRET_FILE"]
    assert _secret_files(_pod_specs()["watch"], watch)[webhook] == ("service-builder-webhook", "WEBHOOK_SECRET")


def test_every_secret_reference_is_documented_by_the_example_and_the_readme() -> None:
    referenced = {ref for spec, container in _spec_and_containers()
                  for path, ref in _secret_files(spec, container).items()
                  if not _secret_mounts(spec, container)[path.rsplit("/", 1)[0]].get("optional")}
    examples = {(secret["metadata"]["name"], key)
                for secret in _documents(EXAMPLE_SECRET) for key in secret["stringData"]}
    assert referenced == examples
    assert ("service-builder-s3", "credentials") in referenced
    assert ("service-builder-webhook", "WEBHOOK_SECRET") in referenced
    readme = (KIT / "README.md").read_text()
    for name, key in referenced:
        command = re.search(rf"create secret generic {name} ((?:.*\\\n)*.*)", readme)
        assert command, f"README.md shows no `kubectl create secret generic {name}`"
        assert f"{key}=" in command.group(1), f"the documented {name} lacks {key}"


def test_cronjob_gets_every_setting_the_brief_names_from_configmap_secret_or_its_namespace() -> None:
    (container,) = _pod_specs()["cronjob"]["containers"]
    configmap = _one("ConfigMap")
    (source,) = container["envFrom"]
    assert source == {"configMapRef": {"name": configmap["metadata"]["name"]}}
    provided = set(configmap["data"]) | {v["name"] for v in container["env"]}
    if "AWS_SHARED_CREDENTIALS_FILE" in provided:  # boto3 reads both keys from that file
        provided |= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert provided >= SETTINGS, SETTINGS - provided
    assert configmap["data"]["LOG_FORMAT"] == "json"
    (namespace,) = [v for v in container["env"] if v["name"] == "K8S_NAME_SPACE"]
    assert namespace["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_webhook_service_reaches_the_receiver_and_not_the_cronjob_pods() -> None:
    service = _one("Service", KIT / "watch")
    selector = service["spec"]["selector"]
    watch_pod = _one("Deployment", KIT / "watch")["spec"]["template"]
    cron_pod = _one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]
    assert selector.items() <= watch_pod["metadata"]["labels"].items()
    assert not selector.items() <= cron_pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    (webhooks,) = [c for c in watch_pod["spec"]["containers"] if c["args"] == ["serve-webhooks"]]
    assert {p["name"]: p["containerPort"] for p in webhooks["ports"]}[port["targetPort"]] == 8081
    assert service["metadata"]["name"] == "service-builder-webhooks" and service["spec"]["type"] == "ClusterIP"


# --- RBAC -------------------------------------------------------------------------------------


def test_nothing_in_the_kit_is_cluster_scoped_rbac() -> None:
    kinds = {doc["kind"] for path in _manifest_files() for doc in _documents(path)}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}


def test_role_has_no_wildcards_and_no_access_to_secrets() -> None:
    for rule in _rules():
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), (field, rule)
        assert not [r for r in rule["resources"] if r.split("/")[0] == "secrets"], rule


def test_no_rule_pairs_create_with_resource_names() -> None:
    # Kubernetes cannot authorise `create` by name: such a rule would silently deny the create.
    assert [rule for rule in _rules() if "create" in rule["verbs"] and rule.get("resourceNames")] == []


def test_rolebinding_binds_the_role_to_the_watcher_service_account_only() -> None:
    binding = _one("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": _one("Role")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": _one("ServiceAccount")["metadata"]["name"]}]


# --- the watcher image ------------------------------------------------------------------------


def test_requirements_pin_every_package_exactly() -> None:
    lines = [line.split("#", 1)[0].strip() for line in (KIT / "requirements.txt").read_text().splitlines()]
    for line in filter(None, lines):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.+!-]*", line), line


def test_image_installs_mlflow_skinny_at_the_version_the_tests_use() -> None:
    image, tested = _requirements(KIT / "requirements.txt"), _requirements(ROOT / "requirements.txt")
    assert "mlflow" not in image
    assert image["mlflow-skinny"] == tested["mlflow"]
    drift = {name: (pin, tested[name]) for name, pin in image.items() if name in tested and tested[name] != pin}
    assert drift == {}


def test_image_is_slim_python_3_11_and_installs_the_pinned_requirements() -> None:
    args = {name: default for arg in _instructions("ARG") for name, _, default in [arg.partition("=")]}
    (base,) = _instructions("FROM")
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    assert any("cronjob/requirements.txt" in copied for copied in _instructions("COPY"))
    assert any("pip install" in run and "-r /tmp/requirements.txt" in run for run in _instructions("RUN"))


def test_image_runs_python_m_watcher_as_a_numeric_non_root_user() -> None:
    user = _instructions("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, user
    (entrypoint,) = _instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", "watcher"]
    assert json.loads(_instructions("CMD")[-1]) == ["run-once"]


def test_every_path_the_image_copies_exists_and_passes_the_dockerignore() -> None:
    allowed = {line[1:].strip() for line in (KIT / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for copy_args in _instructions("COPY"):
        for source in shlex.split(copy_args)[:-1]:
            if not source.startswith("--"):
                assert (ROOT / source).exists(), source
                assert source in allowed, f"{source} is filtered out of the build context"


def _imports(package: Path) -> set[str]:
    names = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def test_image_holds_the_shared_package_the_watcher_imports_as_a_package() -> None:
    copied = {source.rstrip("/") for copy_args in _instructions("COPY")
              for source in shlex.split(copy_args)[:-1] if source.startswith("model_wrapper/")}
    used = {".".join(name.split(".")[:2]) for name in _imports(ROOT / "watcher") if name.startswith("model_wrapper.")}
    assert used == {"model_wrapper.contract"}, used
    assert copied == {"model_wrapper/__init__.py", "model_wrapper/contract"}, copied
    inside = {name for name in _imports(ROOT / "model_wrapper" / "contract") if name.startswith("model_wrapper.")}
    assert all(name.startswith("model_wrapper.contract.") for name in inside), inside


def _installed_closure(pins: dict[str, str]) -> set[str]:
    seen: set[str] = set()
    todo = list(pins)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def test_image_installs_every_third_party_module_the_watcher_imports() -> None:
    installed = _installed_closure(_requirements(KIT / "requirements.txt"))
    providers = importlib.metadata.packages_distributions()
    skinny_files = {str(f) for f in importlib.metadata.files("mlflow-skinny") or []}
    missing = []
    for module in _imports(ROOT / "watcher"):
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in {"watcher", "model_wrapper"}:
            continue
        if not {canonicalize_name(d) for d in providers.get(top, [])} & installed:
            missing.append(module)
        elif top == "mlflow":  # the full mlflow package adds modules on top of mlflow-skinny
            path = module.replace(".", "/")
            if f"{path}.py" not in skinny_files and f"{path}/__init__.py" not in skinny_files:
                missing.append(module)
    assert missing == []
