"""Step 4 of the pass: render a model version's Deployment, Service and Ingress (and its NetworkPolicy
unless switched off; when it scales, its HorizontalPodAutoscaler and PodDisruptionBudget), then validate them.

Pure once the templates are loaded: the same release and settings always give the same
manifests and the same spec hash, so the plan can tell "nothing changed" without I/O.
Registry values reach the YAML only through `|tojson`, and every manifest is checked
against the official Kubernetes schemas before anything is sent to a cluster.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jinja2
import jsonschema
import kubernetes_validate
import yaml
from kubernetes.utils import parse_quantity
from referencing import Registry, Resource

from model_wrapper.contract.spec import Serving
from watcher.config.settings import Settings
from watcher.decide import network
from watcher.decide.runtimes import pick_runtime
from watcher.errors import ContractInvalid, Permanent
from watcher.render.exemptions import scanner_exemptions

_DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "k8s_templates"
TEMPLATES_DIR = Path(os.environ.get("SERVICE_BUILDER_TEMPLATES", _DEFAULT_TEMPLATES))
TEMPLATES = ("deployment.yaml.j2", "service.yaml.j2", "ingress.yaml.j2")
SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
"""The pod annotations Prometheus' stock `kubernetes-pods` scrape job keeps (relabel on these three): every
model pod is scraped out of the box once METRICS_NAMESPACE admits the scraper through the NetworkPolicy."""
# Kind → template of the objects only some models have (see `Renderer.kinds`), applied after the others.
OPTIONAL_TEMPLATES = {"NetworkPolicy": "networkpolicy.yaml.j2",
                      "HorizontalPodAutoscaler": "horizontalpodautoscaler.yaml.j2",
                      "PodDisruptionBudget": "poddisruptionbudget.yaml.j2"}
CORE_KINDS = frozenset({"Deployment", "Service", "Ingress"})
KUBERNETES_SCHEMA_VERSION = "1.33"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "service-builder"
INSTANCE_LABEL = "app.kubernetes.io/instance"
EVALUATES_LABEL = "service-builder.io/evaluates"
"""On an evaluation Job and its pod: the slug of the model it evaluates (never the Deployment's selector)."""
ANNOTATION = "service-builder.io/"
SPEC_HASH = ANNOTATION + "spec-hash"
INPUTS_DIGEST = ANNOTATION + "inputs-digest"
MODEL_NAME = ANNOTATION + "model-name"
MODEL_VERSION = ANNOTATION + "model-version"
SERVING = ANNOTATION + "serving"
RUNTIME = ANNOTATION + "runtime"
NEEDS = ANNOTATION + "runtime-needs"
SECRETS_DIR = "/var/run/secrets/service-builder"
S3_CREDENTIALS_KEY = "credentials"
"""The S3 Secret's key holding an AWS shared credentials file (`[default]`, `aws_access_key_id = ...`)."""
MLFLOW_CREDENTIALS_KEY = "mlflow-credentials"
"""Optional key of the same Secret: MLflow's own credentials file (`[mlflow]`, `mlflow_tracking_username = ...`)."""
ROLLBACK_TO = ANNOTATION + "rollback-to"
"""On a Deployment while an update is unfinished: the version to put back if it fails (not rendered)."""


def shadow_name(slug: str) -> str:
    """The ConfigMap a model's pods read a shadow's mirroring config from (the Deployment mounts it, optional;
    the watcher writes it while a shadow runs, `watcher.render.candidate`)."""
    return f"{slug}-shadow"


@dataclass(frozen=True)
class Release:
    """One model version as it should run: everything the templates need from the registry and contract."""

    name: str
    version: int
    source: str
    run_id: str | None
    slug: str
    serving: Serving = field(default_factory=Serving)
    needs: tuple[str, ...] = ()
    """The version's flavours and packages, which choose its runtime image (watcher.decide.runtimes)."""

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True)
class Rendered:
    release: Release
    manifests: tuple[dict[str, Any], ...]
    """Deployment, Service, Ingress, then the NetworkPolicy, HorizontalPodAutoscaler and PodDisruptionBudget
    where the model has them (the cluster applies the NetworkPolicy first)."""
    spec_hash: str

    @property
    def deployment(self) -> dict[str, Any]:
        return next(manifest for manifest in self.manifests if manifest["kind"] == "Deployment")


class Renderer:
    def __init__(self, settings: Settings, templates_dir: Path = TEMPLATES_DIR) -> None:
        self._settings = settings
        # Not HTML: autoescape would corrupt YAML. Registry values are escaped by |tojson in the templates.
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir), undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
        self._templates = [environment.get_template(name) for name in TEMPLATES]
        self._optional = {kind: environment.get_template(name) for kind, name in OPTIONAL_TEMPLATES.items()}
        sources = b"".join((templates_dir / name).read_bytes() for name in (*TEMPLATES, *OPTIONAL_TEMPLATES.values()))
        self.templates_digest = hashlib.sha256(sources).hexdigest()[:16]
        self._shaping = self._shaping_digest()

    def inputs_digest(self, release: Release) -> str:
        """A digest of everything the manifests are made from: the release, the templates and the
        settings that shape them. Equal digests mean equal manifests, so a steady-state pass
        compares this (microseconds) instead of rendering every live model (milliseconds each)."""
        serving = json.dumps(release.serving.model_dump(mode="json", exclude_none=True), sort_keys=True)
        text = json.dumps([release.name, release.version, release.source, release.run_id, release.slug, serving,
                           list(release.needs), self._shaping])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _shaping_digest(self) -> str:
        """The templates, the settings' fingerprint, and one probe rendering: a setting that reaches
        the manifests changes the probe even where the fingerprint's list of names lags behind."""
        probe = Release(name="probe", version=1, source="s3://probe/model", run_id="probe", slug="probe")
        context = json.dumps(self._context(probe), sort_keys=True, default=str)
        text = "|".join([self.templates_digest, self._settings.fingerprint(), context])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def render(self, release: Release, *, validate: bool = True) -> Rendered:
        """Manifests and their hash; `validate=False` only for comparing hashes, never for applying."""
        if validate and (conflicts := resource_conflicts(release.serving)):
            raise ContractInvalid(f"the contract's {'; '.join(conflicts)}")
        context = self._context(release)
        kinds = self.kinds(release)
        templates = [*self._templates, *(t for kind, t in self._optional.items() if kind in kinds)]
        manifests = tuple(_load(template.render(context), template.name or "") for template in templates)
        digest = self.inputs_digest(release)
        for manifest in manifests:  # part of the hash: new inputs patch the objects once, so the digest stays true
            manifest["metadata"]["annotations"][INPUTS_DIGEST] = digest
        spec_hash = hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()[:16]
        for manifest in manifests:
            manifest["metadata"]["annotations"][SPEC_HASH] = spec_hash
            if validate:
                validate_manifest(manifest)
        return Rendered(release, manifests, spec_hash)

    def kinds(self, release: Release) -> frozenset[str]:
        """The kinds this release runs as: a NetworkPolicy unless switched off, an autoscaler when the
        contract asks for one, a disruption budget when at least two replicas run (a budget over one
        pod would block every node drain)."""
        serving = release.serving
        kinds = set(CORE_KINDS)
        if self._settings.network_policy or self._settings.egress_policy:
            kinds.add("NetworkPolicy")
        if serving.autoscaling is not None:
            kinds.add("HorizontalPodAutoscaler")
        if self._replicas(release) >= 2:
            kinds.add("PodDisruptionBudget")
        return frozenset(kinds)

    def _replicas(self, release: Release) -> int:
        """The replica count a new Deployment starts with (an autoscaled one: its minimum)."""
        serving = release.serving
        if serving.autoscaling is not None:
            return serving.autoscaling.min_replicas
        return serving.replicas or self._settings.default_replicas

    def _context(self, release: Release) -> dict[str, Any]:
        s = self._settings
        selector = {INSTANCE_LABEL: release.slug, MANAGED_BY_LABEL: MANAGED_BY}
        runtime = pick_runtime(s.parsed_runtime_images, release.needs)
        annotations = {MODEL_NAME: release.name, MODEL_VERSION: str(release.version),
                       ANNOTATION + "run-id": release.run_id or "", ANNOTATION + "source": release.source,
                       SERVING: json.dumps(release.serving.model_dump(exclude_none=True), sort_keys=True),
                       NEEDS: json.dumps(list(release.needs)), RUNTIME: runtime or ""}
        resources = self._resources(release)
        image = s.parsed_runtime_images[runtime] if runtime else s.model_wrapper_image
        return {
            "slug": release.slug, "shadow_config_map": shadow_name(release.slug), "namespace": s.k8s_name_space,
            "host": s.service_builder_host_name,
            "api_path": f"/{release.slug}/api",
            "image": image,
            "labels": {**selector, "app.kubernetes.io/name": "model-wrapper",
                       "app.kubernetes.io/version": str(release.version)},
            "selector_labels": selector, "annotations": annotations,
            "pod_annotations": {MODEL_NAME: release.name, MODEL_VERSION: str(release.version), **SCRAPE},
            "replicas": self._replicas(release), "autoscaling": release.serving.autoscaling,
            "progress_deadline_seconds": max(60, int(s.rollout_timeout_seconds)),
            "env": self._env(release), "secret_env": self._secret_env(), "secret_volumes": self._secret_volumes(),
            "resources": resources,
            "deployment_annotations": {**annotations, **scanner_exemptions(resources, image)},
            "cache_size": self.scratch_size(release), "ingress_class_name": s.ingress_class_name,
            "tls_secret_name": s.tls_secret_name,
            **self._network_policy(),
        }

    def scratch_size(self, release: Release) -> str:
        """The pod's scratch space (the emptyDir at /tmp): the contract's serving.scratch_size, else the default."""
        return release.serving.scratch_size or self._settings.default_scratch_size

    def scratch_bytes(self, release: Release) -> int:
        return int(parse_quantity(self.scratch_size(release)))

    def _network_policy(self) -> dict[str, Any]:
        """Sources admitted to the model port and egress rules; None switches that half of the policy off."""
        s = self._settings
        sources = network.ingress_sources(ingress_namespace=s.ingress_namespace, metrics_namespace=s.metrics_namespace,
                                          extra=s.network_policy_extra_sources) if s.network_policy else None
        urls = [s.mlflow_tracking_uri, network.s3_url(s.mlflow_s3_endpoint_url)]
        egress = network.egress_rules(urls=urls, destinations=s.egress_destinations) if s.egress_policy else None
        return {"ingress_sources": sources, "egress_rules": egress, "model_port": network.MODEL_PORT}

    def _env(self, release: Release) -> dict[str, str]:
        env = {"MODEL_NAME": release.name, "MODEL_VERSION": str(release.version), "MODEL_SOURCE": release.source,
               "MODEL_RUN_ID": release.run_id or "", "MODEL_SLUG": release.slug, "PORT": "8080",
               "MLFLOW_TRACKING_URI": _without_userinfo(self._settings.mlflow_tracking_uri),
               "MLFLOW_DISABLE_TELEMETRY": "true", "HOME": "/tmp", "LOG_FORMAT": "json",  # noqa: S108
               # uvicorn believes X-Forwarded-Proto only from these: behind a TLS Ingress, redirects stay https
               "FORWARDED_ALLOW_IPS": self._settings.trusted_proxies,
               "ENV_MISMATCH": self._settings.env_mismatch,
               "AWS_SHARED_CREDENTIALS_FILE": f"{SECRETS_DIR}/s3/{S3_CREDENTIALS_KEY}"}
        if self._settings.api_keys_secret_name:
            env["API_KEYS_FILE"] = f"{SECRETS_DIR}/api-keys/API_KEYS"
        if self._settings.mlflow_s3_endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = _without_userinfo(self._settings.mlflow_s3_endpoint_url)
        return env | self._inference_log_env()

    def _inference_log_env(self) -> dict[str, str]:
        """Where the wrappers log is where `drift` reads; only what differs from the wrapper's defaults, so
        that manifests rendered before the inference log existed keep their digest."""
        s = self._settings
        env = {"INFERENCE_LOG_SAMPLE": f"{s.inference_log_sample:g}"} if s.inference_log_sample else {}
        if s.inference_log_prefix != "inference-log":
            env["INFERENCE_LOG_PREFIX"] = s.inference_log_prefix
        if s.inference_log_bucket:
            env["INFERENCE_LOG_BUCKET"] = s.inference_log_bucket
        return env

    def _secret_env(self) -> dict[str, dict[str, Any]]:
        """Only MLflow's token: MLflow reads it from nowhere but its environment. The rest are files."""
        return {"MLFLOW_TRACKING_TOKEN": {"secret": self._settings.s3_secret_name, "key": "MLFLOW_TRACKING_TOKEN",
                                          "optional": True}}

    def _secret_volumes(self) -> list[dict[str, Any]]:
        """Secrets as read-only files: S3 keys where boto3 looks (AWS_SHARED_CREDENTIALS_FILE), MLflow's
        user and password where MLflow looks ($HOME/.mlflow/credentials), the API keys for API_KEYS_FILE."""
        s = self._settings
        volumes = [
            {"name": "s3-credentials", "secret": s.s3_secret_name, "key": S3_CREDENTIALS_KEY,
             "path": S3_CREDENTIALS_KEY, "optional": False, "mount": f"{SECRETS_DIR}/s3"},
            {"name": "mlflow-credentials", "secret": s.s3_secret_name, "key": MLFLOW_CREDENTIALS_KEY,
             "path": "credentials", "optional": True, "mount": "/tmp/.mlflow"},  # noqa: S108 - HOME is /tmp
        ]
        if s.api_keys_secret_name:
            volumes.append({"name": "api-keys", "secret": s.api_keys_secret_name, "key": "API_KEYS",
                            "path": "API_KEYS", "optional": False, "mount": f"{SECRETS_DIR}/api-keys"})
        return volumes

    def _resources(self, release: Release) -> dict[str, dict[str, str]]:
        """The contract's requests and limits where it sets them, else the defaults. Kubernetes
        refuses a request above its limit, so a default yields to the explicit value it contradicts
        (a contract asking for 4Gi raises the default 1Gi limit; one capping at 128Mi lowers the
        default 256Mi request). Two explicit values that contradict are refused by `render`."""
        s = self._settings
        explicit = release.serving.resources
        asked = {str(k): v for k, v in explicit.requests.items()} if explicit else {}
        capped = {str(k): v for k, v in explicit.limits.items()} if explicit else {}
        requests = {"cpu": s.default_cpu_request, "memory": s.default_memory_request, **asked}
        limits = {"memory": s.default_memory_limit, **({"cpu": s.default_cpu_limit} if s.default_cpu_limit else {}),
                  **capped}
        for name in requests.keys() & limits.keys():
            if parse_quantity(requests[name]) > parse_quantity(limits[name]):
                if name not in capped:
                    limits[name] = requests[name]
                elif name not in asked:
                    requests[name] = limits[name]
        return {"requests": requests, "limits": limits}


def resource_conflicts(serving: Serving) -> list[str]:
    """Requests the contract sets above the limits it sets: the API server would refuse the Deployment."""
    resources = serving.resources
    if resources is None:
        return []
    both = sorted(resources.requests.keys() & resources.limits.keys())
    return [f"serving.resources.requests.{name} ({resources.requests[name]}) is above "
            f"serving.resources.limits.{name} ({resources.limits[name]}); Kubernetes refuses that"
            for name in both if parse_quantity(resources.requests[name]) > parse_quantity(resources.limits[name])]


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Check one manifest against the official schema (strict: unknown fields fail)."""
    try:
        _validator(str(manifest.get("kind")), str(manifest.get("apiVersion"))).validate(manifest)
    except jsonschema.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(top level)"
        raise Permanent(f"rendered {manifest.get('kind')} is invalid at {path}: {e.message[:200]}") from e


@functools.cache
def _validator(kind: str, api_version: str) -> Any:
    """kubernetes-validate's strict schema for one kind, built once (its `validate` re-reads 1.4 MB per call)."""
    folder = f"kubernetes-json-schema/v{KUBERNETES_SCHEMA_VERSION}.0-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kubernetes_validate.utils.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json",
                                                          KUBERNETES_SCHEMA_VERSION)
    except FileNotFoundError:
        raise Permanent(f"no Kubernetes {KUBERNETES_SCHEMA_VERSION} schema for {kind} {api_version}") from None
    registry = _definitions() @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _definitions() -> Resource[Any]:
    folder = f"kubernetes-json-schema/v{KUBERNETES_SCHEMA_VERSION}.0-local-strict"
    return Resource.from_contents(kubernetes_validate.utils.schema_contents(f"{folder}/_definitions.json",
                                                                            KUBERNETES_SCHEMA_VERSION))


def _load(text: str, name: str) -> dict[str, Any]:
    document = _whole_characters(yaml.safe_load(text))
    if not isinstance(document, dict) or "kind" not in document:
        raise Permanent(f"template {name} did not render one Kubernetes object")
    return document


def _whole_characters(value: Any) -> Any:
    """Rejoin the surrogate pairs `|tojson` writes for characters beyond U+FFFF (YAML reads them as two halves)."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
    if isinstance(value, dict):
        return {_whole_characters(key): _whole_characters(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_characters(item) for item in value]
    return value


def _without_userinfo(url: str) -> str:
    """Credentials never go into a manifest: pods get them from the Secret instead."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
