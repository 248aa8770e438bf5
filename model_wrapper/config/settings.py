"""The wrapper's one settings object, read from the environment at start-up.

Called by `model_wrapper.server` (and by tests that build an app in-process). A bad value
stops the process with a message that names the environment variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from model_wrapper.contract.naming import model_slug
from model_wrapper.contract.secret_files import aws_credential_values, read_secret_file

SOURCE_SCHEMES = ("models:/", "runs:/", "s3://", "file:///")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class SettingsError(ValueError):
    """The environment does not describe a model the wrapper can serve; the message names the variable."""


class WrapperSettings(BaseModel):
    """Everything the wrapper reads from its environment (names are the variables, upper case).

    A plain pydantic model over the environment, not pydantic-settings' `BaseSettings`: every field is a
    scalar read from one variable, which is all `load_settings` does, and importing pydantic-settings (its
    dotenv, CLI and cloud-secret sources) was a tenth of a second of every start before `ready`."""

    # No `use_attribute_docstrings`: nothing reads the fields' descriptions, and pydantic would parse this
    # file's source for them at every start (35 ms of CPU before `ready`). The docstrings are for readers.
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), frozen=True, validate_default=True)

    model_name: str = Field(min_length=1, max_length=500)
    """Registered-model name, as in the MLflow registry."""
    model_version: str = Field(min_length=1, max_length=50)
    """Registered-model version being served."""
    model_source: str = Field(min_length=1, max_length=2000)
    """Where the model's artifacts are: `models:/…`, `runs:/…`, `s3://…`, or `file:///…` (an MLflow model
    directory already on this machine, e.g. baked into the image or on a volume: read in place)."""
    model_run_id: str | None = Field(default=None, max_length=100)
    """The run that logged the model; where a run-level contract.yaml is looked for."""
    model_slug: str = ""
    """URL prefix label: routes live under `/<slug>/api/`. Default: derived from MODEL_NAME."""
    port: int = Field(default=8080, ge=1, le=65535)
    """TCP port to listen on."""
    host: str = "0.0.0.0"  # noqa: S104 - a container listens on all its interfaces
    """Address to bind."""
    drain_seconds: float = Field(default=10, ge=0, le=600)
    """After SIGTERM: seconds the wrapper keeps serving with readiness failing (503) before it stops, while
    the pod's removal from the Service endpoints reaches kube-proxy and the Ingress controller. Keep it below
    the pod's terminationGracePeriodSeconds (30 as rendered), or the kubelet kills it mid-drain. 0: stop at once."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes; each loads its own copy of the model. Prefer replicas to workers."""
    max_body_bytes: int = Field(default=64 << 20, ge=1024, le=1 << 30)
    """Largest request body accepted, in bytes (default 64 MiB: batch scoring); larger bodies get 413."""
    max_batch: int = Field(default=1000, ge=1, le=1_000_000)
    """Most instances in one predict request; more get 413."""
    api_keys: SecretStr | None = None
    """Comma-separated API keys. When set, predict, invocations and metadata need one
    (header `X-API-Key` or `Authorization: Bearer`); health, ready, metrics and the docs stay open."""
    api_keys_file: Path | None = None
    """A file holding the API keys (a mounted Kubernetes Secret); takes the place of API_KEYS."""
    log_format: Literal["text", "json"] = "text"
    """`text` for people, `json` for log collectors."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level logged."""
    access_log: bool = False
    """Log one line per request (off by default: /metrics counts requests without the cost)."""
    env_mismatch: Literal["warn", "fail"] = "warn"
    """A version difference in the model's flavour library, numpy/pandas majors or Python: `warn` serves
    the model and lists it under `metadata` and `ready`; `fail` refuses to serve it."""
    termination_log: Path = Path("/dev/termination-log")
    """Where a fatal start-up reason is written; Kubernetes shows it in the pod status."""
    mlflow_tracking_uri: str | None = None
    """MLflow tracking server (read by MLflow itself; needed for models:/ and runs:/ sources)."""
    mlflow_s3_endpoint_url: str | None = None
    """S3 endpoint for artifacts when not AWS (MinIO, moto); read by MLflow."""
    aws_access_key_id: SecretStr | None = None
    """S3 access key (read by boto3; never logged)."""
    aws_secret_access_key: SecretStr | None = None
    """S3 secret key (read by boto3; never logged)."""
    shadow_config: Path = Path("/etc/service-builder/shadow/shadow.json")
    """Where a shadow's mirroring config appears (the optional ConfigMap `<slug>-shadow`); absent: no mirroring."""
    mirror_to_live: str | None = Field(default=None, pattern=r"^https?://[^\s/]+/?$")
    """A canary candidate's only: the live version's Service, asked the same prediction requests as this wrapper
    answers, the two answers compared on `/metrics` (rendered into the candidate's Deployment alone)."""
    mirror_sample: float = Field(default=1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """Share of the answered prediction requests asked of MIRROR_TO_LIVE as well."""
    inference_log_sample: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    """Share of predict requests written to the inference log (0: off); a contract's `logging.sample` wins."""
    inference_log_prefix: str = Field(default="inference-log", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
    """Key prefix of the inference log: s3://<bucket>/<prefix>/<slug>/<version>/date=YYYY-MM-DD/."""
    inference_log_bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    """Bucket of the inference log; default: the bucket the model's artifacts are in."""
    inference_log_batch_records: int = Field(default=1000, ge=1, le=1_000_000)
    """Requests per Parquet file at most; a file is written when this many are queued..."""
    inference_log_batch_seconds: float = Field(default=60.0, gt=0.0, le=3600.0)
    """...or when the oldest queued request is this old, whichever comes first."""
    inference_log_queue: int = Field(default=10_000, ge=1, le=10_000_000)
    """Requests held for writing at most; beyond, records are dropped (and counted), never the request."""
    inference_log_flush_seconds: float = Field(default=10.0, ge=0.0, le=600.0)
    """On SIGTERM, how long the queued records may take to be written (keep it within the drain period)."""

    @field_validator("model_source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(SOURCE_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(SOURCE_SCHEMES)}")
        return value

    @model_validator(mode="after")
    def _slug(self) -> WrapperSettings:
        slug = self.model_slug or model_slug(self.model_name)
        if not _DNS_LABEL.match(slug):
            raise ValueError("MODEL_SLUG must be a DNS-1035 label (a-z, 0-9, '-', starting with a letter)")
        object.__setattr__(self, "model_slug", slug)
        return self

    @model_validator(mode="after")
    def _api_keys_from_file(self) -> WrapperSettings:
        if self.api_keys_file is not None:
            object.__setattr__(self, "api_keys", SecretStr(read_secret_file(self.api_keys_file, "API_KEYS_FILE")))
        return self

    @property
    def prefix(self) -> str:
        """The route prefix, `/<slug>/api/`."""
        return f"/{self.model_slug}/api/"

    def key_list(self) -> list[bytes]:
        """The configured API keys (empty when the API is open)."""
        raw = self.api_keys.get_secret_value() if self.api_keys else ""
        return [key.strip().encode() for key in raw.split(",") if key.strip()]

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line or an error message."""
        values = [s.get_secret_value() for s in (self.aws_secret_access_key, self.aws_access_key_id) if s]
        values += aws_credential_values()
        return [v for v in values + [k.decode() for k in self.key_list()] if len(v) >= 4]


def load_settings(environ: Mapping[str, str] | None = None) -> WrapperSettings:
    """Read and validate the settings from the process environment, with `environ` (if given) taking
    precedence; raise SettingsError naming the bad variable. Names are matched case-insensitively."""
    values = {key.lower(): value for source in (os.environ, environ or {}) for key, value in source.items()}
    try:
        return WrapperSettings.model_validate({k: v for k, v in values.items() if k in WrapperSettings.model_fields})
    except ValidationError as e:
        raise SettingsError(_describe(e)) from None


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        problem = "is required" if item["type"] == "missing" else item["msg"].removeprefix("Value error, ")
        parts.append(f"{str(item['loc'][0]).upper()} {problem}" if item["loc"] else problem)
    return "bad wrapper environment: " + "; ".join(parts)
