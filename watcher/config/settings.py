"""The watcher's one settings object, read from the environment names ops already use.

Validated at start-up (`load_settings`); a bad value ends as one line naming the variable.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_wrapper.contract.secret_files import read_secret_file
from watcher.decide import network
from watcher.decide.runtimes import parse_runtime_images
from watcher.decide.types import Selector
from watcher.errors import SettingsInvalid

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_HOST = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
DEFAULT_SCRATCH_SIZE = "2Gi"
_MATCHER = r'[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"'
_MATCHERS = re.compile(rf"^\s*({_MATCHER}\s*(,\s*{_MATCHER}\s*)*)?$")
"""PromQL label matchers as written inside braces: `namespace="models", job=~"pods|kubernetes-pods"`."""


class Settings(BaseSettings):
    """Everything the watcher reads from its environment."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    mlflow_tracking_uri: str = Field(min_length=1)
    """The MLflow tracking server that holds the model registry."""
    mlflow_s3_endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, moto); unset for AWS S3."""
    aws_access_key_id: SecretStr | None = None
    """S3 access key; read from a Secret, never logged."""
    aws_secret_access_key: SecretStr | None = None
    """S3 secret key; read from a Secret, never logged."""
    k8s_name_space: str = Field(default="default", pattern=_DNS_LABEL)
    """The namespace models are deployed into (and the only one the watcher touches)."""
    k8s_api: str | None = None
    """API server URL for bearer-token access; otherwise in-cluster config, otherwise kubeconfig."""
    k8s_api_key: SecretStr | None = None
    """Bearer token that goes with K8S_API."""
    k8s_request_timeout_seconds: float = Field(default=30, gt=0, le=600)
    """Read timeout of every Kubernetes request (connecting has 5 s): a dead connection cannot hang a pass."""
    k8s_verify_ssl: bool = True
    """Verify the API server's certificate when K8S_API is used."""
    service_builder_host_name: str = Field(
        default="localhost", pattern=_HOST, max_length=253,
        validation_alias=AliasChoices("SERVICE_BUILDER_HOST_NAME", "DPM360_SERVICE_BUILDER_HOST_NAME"))
    """Host name of the Ingress that serves every model under /<slug>/api/."""
    model_wrapper_image: str = Field(
        default="service-builder/model-wrapper:0.1.0", pattern=r"^[A-Za-z0-9._/:@-]+$", max_length=255)
    """The shared model-wrapper image every model Deployment runs."""
    runtime_images: str = ""
    """Flavour or package → wrapper image, e.g. `xgboost=reg/wrapper-gbm:1,pytorch=reg/wrapper-torch:1`;
    versions that need none of them run MODEL_WRAPPER_IMAGE. On the local target: Python interpreters."""
    env_mismatch: Literal["warn", "fail"] = "warn"
    """A model logged with another version of its flavour's library, numpy/pandas major or Python:
    `warn` deploys it with a deployment_warnings tag, `fail` refuses it."""
    selector: str = "tag:deploy=production"
    """Which versions should be live: tag:KEY=VALUE, alias:NAME or stage:NAME."""
    poll_interval_seconds: int = Field(default=120, ge=1, le=86_400)
    """Seconds between passes of `watch`."""
    deploy_target: Literal["kubernetes", "local"] = "kubernetes"
    """Where models run: Kubernetes, or wrapper processes on this machine (`local`)."""
    rollout_timeout_seconds: float = Field(default=300, gt=0, le=3600)
    """How long to wait for a new version to become ready before rolling back."""
    smoke_test: Literal["auto", "on", "off"] = "auto"
    """Predict the contract's examples after a rollout: `auto` does so where the endpoint is reachable."""
    smoke_test_seconds: float = Field(default=60, ge=0, le=3600)
    """How long the smoke test retries an endpoint that refuses or answers 502/503/504 before it fails."""
    trusted_proxies: str = Field(default="*", pattern=r"^[0-9A-Fa-f.:/,* ]+$", max_length=1000)
    """Addresses whose X-Forwarded-Proto/For a model pod believes (uvicorn's FORWARDED_ALLOW_IPS): the Ingress
    controller's, so that redirects behind a TLS Ingress stay https. `*` trusts any sender."""
    ingress_class_name: str | None = Field(default=None, pattern=_DNS_LABEL)
    """Optional ingressClassName for the model Ingresses."""
    canary_split: Literal["auto", "ingress-nginx", "replicas"] = "auto"
    """How a canary's share of traffic is made: ingress-nginx's canary annotations on a second Ingress, or the
    candidate's replicas behind the one Service; `auto`: ingress-nginx when INGRESS_CLASS_NAME is `nginx`."""
    tls_secret_name: str | None = Field(default=None, pattern=_DNS_LABEL)
    """Optional TLS Secret for the Ingress host; endpoints become https."""
    s3_secret_name: str = Field(default="service-builder-s3", pattern=_DNS_LABEL)
    """Secret model pods mount their S3 credentials file from (key `credentials`, an AWS shared credentials file)."""
    api_keys_secret_name: str | None = Field(default=None, pattern=_DNS_LABEL)
    """Optional Secret (key API_KEYS) that switches on API keys for every model endpoint."""
    network_policy: bool = True
    """A NetworkPolicy per model admitting only the sources below (turn off where no NetworkPolicy is enforced)."""
    ingress_namespace: str = "ingress-nginx"
    """The Ingress controller's namespace, admitted to the model port: a name, or KEY=VALUE[,...] namespace labels."""
    metrics_namespace: str | None = None
    """The metrics scraper's namespace (e.g. Prometheus), admitted to the model port: a name or KEY=VALUE labels."""
    prometheus_url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2000)
    """Where a rollout's figures are read (Prometheus' HTTP API) instead of from the wrappers' `/metrics`."""
    prometheus_matchers: str | None = Field(default=None, max_length=1000)
    """PromQL label matchers added to each figures query; unset: `namespace="<K8S_NAME_SPACE>"` on Kubernetes,
    none on the local target; empty: none."""
    network_policy_extra_sources: str = ""
    """More sources admitted to the model port, space-separated: namespace:NAME, namespace:K=V, pods:K=V, cidr:NET."""
    egress_policy: bool = False
    """Also restrict what model pods may call: DNS, the MLflow server and S3, nothing else."""
    egress_destinations: str = ""
    """Where the MLflow server and S3 live, written like the extra sources; unset: what their URLs' hosts say."""
    default_replicas: int = Field(default=1, ge=1, le=50)
    """Replicas when the contract has no serving.replicas."""
    default_cpu_request: str = Field(default="100m", pattern=_QUANTITY)
    default_memory_request: str = Field(default="256Mi", pattern=_QUANTITY)
    default_memory_limit: str = Field(default="1Gi", pattern=_QUANTITY)
    default_cpu_limit: str | None = Field(default=None, pattern=_QUANTITY)
    """CPU limit where the contract sets none; unset by default, since a CPU limit throttles inference."""
    default_scratch_size: str = Field(default=DEFAULT_SCRATCH_SIZE, pattern=_QUANTITY)
    """The model pod's scratch space (its /tmp, an emptyDir the wrapper downloads the model into) where the
    contract's serving.scratch_size sets none. A version whose files are larger fails before it is applied."""
    local_state_dir: Path = Path(".state/local")
    """Where the local target keeps track of the wrapper processes it started."""
    local_front_port: int = Field(default=8090, ge=0, le=65_535)
    """The local target's one port, as an Ingress is: `http://127.0.0.1:PORT/<slug>/api/` reaches the model's
    current wrapper. Its front process starts with the first deployed model and stops with the last; a new port
    takes effect when it next starts. 0: any free port (tests running side by side)."""
    search_page_size: int = Field(default=1000, ge=1, le=200_000)
    """Versions per MLflow search page."""
    log_format: Literal["text", "json"] = "text"
    """`json` prints one JSON object per line (for clusters)."""
    webhook_secret: SecretStr | None = None
    """Shared secret of the MLflow webhook (HMAC-SHA256); required by serve-webhooks. For local runs:
    in a cluster, WEBHOOK_SECRET_FILE (a mounted Secret) keeps it out of the environment."""
    webhook_secret_file: Path | None = None
    """A file holding the webhook secret (a mounted Kubernetes Secret); takes the place of WEBHOOK_SECRET."""
    webhook_port: int = Field(default=8081, ge=1, le=65_535)
    """Port of the webhook receiver."""
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    """How far a delivery's signed timestamp may be from now; older (or later) deliveries are refused."""
    listen_address: str = Field(default="0.0.0.0", min_length=1)  # noqa: S104 - a pod listens on its own IP
    """Address the webhook receiver and the metrics endpoint bind to (`127.0.0.1` keeps them local)."""
    metrics_port: int | None = Field(default=None, ge=1, le=65_535)
    """Serve Prometheus metrics on this port during `watch` and `serve-webhooks` (off when unset)."""
    backoff_max_seconds: float = Field(default=300, gt=0, le=86_400)
    """Longest wait between passes while they keep failing (the wait doubles from 1 s, with jitter)."""
    retry_backoff_max_seconds: float = Field(default=1800, ge=60, le=86_400)
    """Longest pause before a version the cluster keeps failing is tried again: the first retry is the next pass,
    then the pause is 60 s, doubling with each failure in a row. A change of inputs, `retry` or a webhook retries
    at once."""
    stuck_pass_seconds: float | None = Field(default=None, ge=1, le=86_400)
    """`watch`/`serve-webhooks`: a pass that shows no progress (no model acted on, no rollout poll) for this long
    is stuck, and /healthz answers 503 so the livenessProbe restarts the watcher. Unset: the longest one model's
    steps may go quiet, ROLLOUT_TIMEOUT + EVALUATION_TIMEOUT + SMOKE_TEST + 4 K8S_REQUEST_TIMEOUT seconds + 120."""
    lease_name: str = Field(default="service-builder", pattern=_DNS_LABEL)
    """The coordination Lease that keeps two watchers from acting at once."""
    evaluation_timeout_seconds: float = Field(default=900, ge=10, le=86_400)
    """Longest an evaluation (the contract's evaluation section) may run: the Job's activeDeadlineSeconds."""
    pass_deadline_seconds: float | None = Field(default=None, ge=1, le=86_400)
    """How long one pass may run: the CronJob's activeDeadlineSeconds less its terminationGracePeriodSeconds. A
    pass starts no further deployment once less than one model's worst case is left, and leaves it to the next
    pass. At least that worst case (see `model_worst_case_seconds`). Unset: no limit (`watch`, the CLI)."""
    inference_log_sample: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """Every wrapper's INFERENCE_LOG_SAMPLE: the share of predict requests logged (a contract's `logging` wins)."""
    inference_log_prefix: str = Field(default="inference-log", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
    """Where the wrappers write their inference log (the wrappers' own INFERENCE_LOG_PREFIX)."""
    inference_log_bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    """The wrappers' INFERENCE_LOG_BUCKET; default, as theirs: the bucket of each model's artifacts."""
    drift_interval_seconds: int | None = Field(default=None, ge=60, le=30 * 86_400)
    """During `watch`, measure the drift of every deployed version this often (off when unset)."""
    drift_window_seconds: float = Field(default=86_400, ge=60, le=90 * 86_400)
    """The window those scheduled measurements read (the command's --since)."""

    @field_validator("selector")
    @classmethod
    def _selector_parses(cls, value: str) -> str:
        Selector.parse(value)
        return value

    @field_validator("runtime_images")
    @classmethod
    def _runtime_images_parse(cls, value: str) -> str:
        parse_runtime_images(value)
        return value

    @model_validator(mode="after")
    def _runtimes_exist(self) -> Settings:
        for key, image in self.parsed_runtime_images.items():
            if self.deploy_target == "local" and not (Path(image).is_file() and os.access(image, os.X_OK)):
                raise ValueError(f"RUNTIME_IMAGES: {key}={image} is not an executable Python interpreter "
                                 "(on the local target each value is one, e.g. a virtualenv's bin/python)")
            if self.deploy_target == "kubernetes" and not re.fullmatch(r"[A-Za-z0-9._/:@-]{1,255}", image):
                raise ValueError(f"RUNTIME_IMAGES: {key}={image!r} is not an image reference")
        return self

    @field_validator("ingress_namespace")
    @classmethod
    def _ingress_namespace_selects(cls, value: str) -> str:
        network.namespace_selector(value)
        return value

    @field_validator("metrics_namespace")
    @classmethod
    def _metrics_namespace_selects(cls, value: str | None) -> str | None:
        if value:
            network.namespace_selector(value)
        return value or None

    @field_validator("prometheus_matchers")
    @classmethod
    def _prometheus_matchers_parse(cls, value: str | None) -> str | None:
        if value is not None and not _MATCHERS.match(value):
            raise ValueError('expected PromQL label matchers, e.g. namespace="models"')
        return value

    @field_validator("network_policy_extra_sources", "egress_destinations")
    @classmethod
    def _peers_parse(cls, value: str) -> str:
        network.parse_peers(value)
        return value

    @model_validator(mode="after")
    def _webhook_secret_from_file(self) -> Settings:
        if self.webhook_secret_file is not None:
            self.webhook_secret = SecretStr(read_secret_file(self.webhook_secret_file, "WEBHOOK_SECRET_FILE"))
        return self

    @model_validator(mode="after")
    def _default_request_within_limit(self) -> Settings:
        from kubernetes.utils import parse_quantity  # a third of a second to import: only when settings load

        if self.default_cpu_limit and parse_quantity(self.default_cpu_request) > parse_quantity(self.default_cpu_limit):
            raise ValueError(f"DEFAULT_CPU_REQUEST ({self.default_cpu_request}) is above DEFAULT_CPU_LIMIT "
                             f"({self.default_cpu_limit}); Kubernetes refuses a request above its limit")
        if parse_quantity(self.default_memory_request) > parse_quantity(self.default_memory_limit):
            raise ValueError(f"DEFAULT_MEMORY_REQUEST ({self.default_memory_request}) is above DEFAULT_MEMORY_LIMIT "
                             f"({self.default_memory_limit}); Kubernetes refuses a request above its limit")
        return self

    @property
    def parsed_selector(self) -> Selector:
        return Selector.parse(self.selector)

    @property
    def parsed_runtime_images(self) -> dict[str, str]:
        return parse_runtime_images(self.runtime_images)

    @property
    def splits_by_ingress_nginx(self) -> bool:
        """Whether a canary's share is an ingress-nginx canary Ingress (else the candidate's replica count)."""
        if self.canary_split == "auto":
            return self.ingress_class_name == "nginx"
        return self.canary_split == "ingress-nginx"

    @property
    def prometheus_selector(self) -> str:
        """PROMETHEUS_MATCHERS, or by default the model pods' namespace (Kubernetes; none on the local target)."""
        if self.prometheus_matchers is not None:
            return self.prometheus_matchers
        return f'namespace="{self.k8s_name_space}"' if self.deploy_target == "kubernetes" else ""

    @property
    def endpoint_scheme(self) -> str:
        return "https" if self.tls_secret_name else "http"

    @property
    def model_worst_case_seconds(self) -> float:
        """The longest one model's deployment may take when every wait runs out: the evaluation Job's wait
        (EVALUATION_TIMEOUT + 60), a rollout without progress (ROLLOUT_TIMEOUT), the smoke test (SMOKE_TEST), four
        requests at their timeout and 120 s for the rest (26 minutes with the defaults)."""
        return (self.evaluation_timeout_seconds + 60 + self.rollout_timeout_seconds + self.smoke_test_seconds
                + 4 * self.k8s_request_timeout_seconds + 120)

    @model_validator(mode="after")
    def _pass_deadline_fits_a_model(self) -> Settings:
        if self.pass_deadline_seconds is not None and self.pass_deadline_seconds < self.model_worst_case_seconds:
            raise ValueError(
                f"PASS_DEADLINE_SECONDS ({self.pass_deadline_seconds:.0f}) is shorter than one model's worst case "
                f"({self.model_worst_case_seconds:.0f} s: EVALUATION_TIMEOUT_SECONDS + 60 + ROLLOUT_TIMEOUT_SECONDS "
                "+ SMOKE_TEST_SECONDS + 4 K8S_REQUEST_TIMEOUT_SECONDS + 120); raise it with the CronJob's "
                "activeDeadlineSeconds, or lower those timeouts")
        return self

    @property
    def stuck_after_seconds(self) -> float:
        """STUCK_PASS_SECONDS, or what it defaults to (25 minutes with the other defaults)."""
        if self.stuck_pass_seconds is not None:
            return self.stuck_pass_seconds
        return (self.rollout_timeout_seconds + self.evaluation_timeout_seconds + self.smoke_test_seconds
                + 4 * self.k8s_request_timeout_seconds + 120)

    def fingerprint(self) -> str:
        """A short hash of the settings that shape a deployment (not secrets, not timing).

        ROLLOUT_TIMEOUT_SECONDS stays out although it reaches progressDeadlineSeconds: the renderer's probe
        rendering carries that change into the inputs digest, and a timeout can fix no failure that is
        remembered as permanent (running out of it is retried anyway), so it must not reopen them."""
        shaping = self.model_dump(include={
            "k8s_name_space", "service_builder_host_name", "model_wrapper_image", "ingress_class_name",
            "tls_secret_name", "s3_secret_name", "api_keys_secret_name", "default_replicas",
            "default_cpu_request", "default_memory_request", "default_memory_limit", "default_cpu_limit",
            "mlflow_tracking_uri",
            "trusted_proxies",
            "mlflow_s3_endpoint_url", "deploy_target", "runtime_images", "env_mismatch", "network_policy",
            "ingress_namespace", "metrics_namespace", "network_policy_extra_sources", "egress_policy",
            "egress_destinations"})
        if self.default_scratch_size != DEFAULT_SCRATCH_SIZE:  # only then: installs on the default keep their hash
            shaping["default_scratch_size"] = self.default_scratch_size
        return hashlib.sha256(repr(sorted(shaping.items())).encode()).hexdigest()[:16]


def load_settings(**overrides: object) -> Settings:
    """Read and validate the environment; raise SettingsInvalid naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        problems = []
        for item in e.errors():
            message = "not set" if item["type"] == "missing" else item["msg"].removeprefix("Value error, ")
            # A check across variables (no location) names them in its message.
            problems.append(f"{str(item['loc'][0]).upper()}: {message}" if item["loc"] else message)
        raise SettingsInvalid("invalid settings: " + "; ".join(problems)) from None
