"""The model contract (`contract.yaml`, version 1): its schema and strict parsing.

Shared by the watcher (validates before deploying) and the wrapper (builds its API from it).
Pure: no MLflow, no I/O. Every way a contract can be wrong ends as a `ContractError`
whose message says what to fix.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from model_wrapper.contract.evaluation import Evaluation
from model_wrapper.contract.monitoring import Drift, Logging
from model_wrapper.contract.rollout import Rollout

MAX_CONTRACT_BYTES = 1 << 20
MAX_FIELDS = 1000
MAX_EXAMPLES = 100
CONTRACT_FILE = "contract.yaml"
HOW_TO_ADD = (
    "log a contract.yaml with the model "
    "(mlflow.<flavor>.log_model(..., extra_files=['contract.yaml'])) or log the model with a signature"
)
NEEDS_NEW_VERSION = "this needs a new version: log the model again so, register it and select that version"
"""Ends a fix that only a new model version can carry; the watcher then offers no `retry`, which cannot help."""

# Column names as data frames carry them: printable, no control characters.
FieldName = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,128}$")]
# Kubernetes resource quantities, e.g. 250m, 1.5, 512Mi, 1G.
Quantity = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")]


class ContractError(ValueError):
    """The contract cannot be used; the message says what to fix."""


class FieldType(StrEnum):
    number = "number"
    integer = "integer"
    string = "string"
    boolean = "boolean"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """One input (or output) field of an instance."""

    type: FieldType
    description: str | None = Field(default=None, max_length=2000)
    minimum: float | None = None
    maximum: float | None = None
    enum: list[str | int | float | bool] | None = Field(default=None, min_length=1, max_length=1000)
    required: bool = True
    example: str | int | float | bool | None = None
    allow_nan: bool = False
    """Accept NaN and infinity for this number field (rejected by default)."""
    log: bool = True
    """False keeps the field out of the inference log, error records included (personal data)."""

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is greater than maximum {self.maximum}")
        if any(bound is not None and not math.isfinite(bound) for bound in (self.minimum, self.maximum)):
            raise ValueError("minimum and maximum must be finite numbers")
        if (self.minimum is not None or self.maximum is not None) and self.type not in _NUMERIC:
            raise ValueError(f"minimum/maximum only apply to number or integer fields, not {self.type.value}")
        for value in self.enum or []:
            if problem := self.check_value(value, check_enum=False):
                raise ValueError(f"enum value {value!r}: {problem}")
        if self.example is not None and (problem := self.check_value(self.example)):
            raise ValueError(f"example {self.example!r}: {problem}")
        return self

    def check_value(self, value: Any, *, check_enum: bool = True) -> str | None:
        """Why `value` does not fit this field, or None when it does."""
        if not _TYPE_CHECKS[self.type](value):
            return f"expected {self.type.value}, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value) and not self.allow_nan:
            return "NaN and infinity are not allowed (set allow_nan: true to accept them)"
        if self.minimum is not None and value < self.minimum:
            return f"below the minimum {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return f"above the maximum {self.maximum}"
        if check_enum and self.enum is not None and value not in self.enum:
            return f"not one of {self.enum}"
        return None


_NUMERIC = (FieldType.number, FieldType.integer)
_TYPE_CHECKS = {
    FieldType.number: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    FieldType.integer: lambda v: isinstance(v, int) and not isinstance(v, bool),
    FieldType.string: lambda v: isinstance(v, str),
    FieldType.boolean: lambda v: isinstance(v, bool),
}


class Resources(_Strict):
    requests: dict[Literal["cpu", "memory"], Quantity] = {}
    limits: dict[Literal["cpu", "memory"], Quantity] = {}


class Autoscaling(_Strict):
    """A HorizontalPodAutoscaler for the model's Deployment, scaling on CPU."""

    min_replicas: int = Field(ge=1, le=50)
    max_replicas: int = Field(ge=1, le=50)
    target_cpu_utilization: int = Field(ge=1, le=100, description="percent of the CPU request")

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class Serving(_Strict):
    """Per-model overrides of how the wrapper is run."""

    replicas: int | None = Field(default=None, ge=1, le=50)
    resources: Resources | None = None
    autoscaling: Autoscaling | None = None
    scratch_size: Quantity | None = None
    """The pod's scratch space (its /tmp, where the wrapper downloads the model), e.g. `8Gi`; the watcher's
    DEFAULT_SCRATCH_SIZE otherwise. It must hold the model's files."""

    @model_validator(mode="after")
    def _one_replica_count(self) -> Serving:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("give either replicas or autoscaling: with autoscaling the replica count is the "
                             "HorizontalPodAutoscaler's, between min_replicas and max_replicas")
        return self


class Contract(_Strict):
    """A parsed, self-consistent contract."""

    version: Literal[1] = 1
    title: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=10_000)
    task: Literal["classification", "regression", "other"] = "other"
    inputs: dict[FieldName, FieldSpec] = Field(default={}, max_length=MAX_FIELDS)
    """Left out only for a model whose tensors cannot be given as fields (an image, a string tensor):
    such a model has no `predict`, and is served through `invocations` (see `signature.tensors_without_fields`)."""
    outputs: dict[FieldName, FieldSpec] = Field(default={}, max_length=MAX_FIELDS)
    labels: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    examples: list[dict[FieldName, Any]] = Field(default=[], max_length=MAX_EXAMPLES)
    serving: Serving = Serving()
    evaluation: Evaluation | None = None
    """The optional evaluation gate: test data logged beside the contract, and what it must score."""
    logging: Logging | None = None
    """The inference log's sample for this model (the wrapper's INFERENCE_LOG_SAMPLE otherwise)."""
    drift: Drift | None = None
    """Thresholds of `python -m watcher drift` (its defaults otherwise)."""
    rollout: Rollout | None = None
    """How a new version takes live traffic beside the serving one (shadow or canary), judged by its figures."""

    @model_validator(mode="after")
    def _examples_fit_inputs(self) -> Contract:
        for index, example in enumerate(self.examples):
            if problems := self.instance_problems(example):
                raise ValueError(f"examples[{index}] breaks the inputs schema: {'; '.join(problems)}")
        if self.labels is not None and self.task != "classification":
            raise ValueError("labels are only meaningful with task: classification")
        if self.evaluation is not None and not self.inputs:
            raise ValueError("evaluation needs inputs: the evaluation data's columns are the contract's inputs")
        if self.evaluation is not None and (problems := self.evaluation.problems_for(self.task, self.inputs)):
            raise ValueError(f"evaluation: {'; '.join(problems)}")
        if self.rollout is not None and (problems := self.rollout.problems_for(self.task)):
            raise ValueError(f"rollout: {'; '.join(problems)}")
        return self

    def instance_problems(self, instance: dict[str, Any]) -> list[str]:
        """Why one instance does not fit `inputs` (empty when it does)."""
        problems = [f"{name}: unknown field" for name in instance if name not in self.inputs]
        for name, spec in self.inputs.items():
            if name not in instance or (instance[name] is None and not spec.required):  # null: absent, as in the API
                if spec.required:
                    problems.append(f"{name}: required field missing")
            elif (problem := spec.check_value(instance[name])) is not None:
                problems.append(f"{name}: {problem}")
        return problems


class _ContractLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (no alias bombs) and duplicate keys (no silent overrides)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise ContractError("contract.yaml uses a YAML alias (*name); write the value out instead")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise ContractError(f"contract.yaml has the key {key!r} twice (line {key_node.start_mark.line + 1})")
            seen.add(key) if isinstance(key, str | int | float | bool) else None
        return super().construct_mapping(node, deep=deep)


def parse_contract(data: bytes) -> Contract:
    """Parse and validate `contract.yaml` bytes; raise ContractError saying what to fix."""
    if len(data) > MAX_CONTRACT_BYTES:
        raise ContractError(f"contract.yaml is {len(data)} bytes; the limit is {MAX_CONTRACT_BYTES} (1 MiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContractError(f"contract.yaml is not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    if not text.strip():
        raise ContractError("contract.yaml is empty; it needs at least an 'inputs' section")
    try:
        document = yaml.load(text, Loader=_ContractLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ContractError(f"contract.yaml is not valid YAML: {_one_line(e)}") from e
    except RecursionError as e:
        raise ContractError("contract.yaml is nested too deeply") from e
    except ContractError:
        raise
    except (ValueError, OverflowError) as e:  # e.g. a 5000-digit integer, the date 2023-02-30
        raise ContractError(f"contract.yaml has a value that cannot be read: {_one_line(e)}") from e
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise ContractError(f"contract.yaml must be a mapping with an 'inputs' section, not a {kind}")
    return contract_from_dict(document)


def contract_from_dict(document: dict[str, Any]) -> Contract:
    try:
        return Contract.model_validate(document)
    except ValidationError as e:
        raise ContractError(f"contract.yaml is invalid: {format_validation_error(e)}") from e
    except RecursionError as e:
        raise ContractError("contract.yaml is nested too deeply") from e


def format_validation_error(error: ValidationError, limit: int = 5) -> str:
    """Pydantic errors as `path: message` pairs, the unknown-key case named as such."""
    parts = []
    for item in error.errors()[:limit]:
        path = ".".join(printable(str(p)) for p in item["loc"]) or "(top level)"
        message = "unknown key (check the spelling)" if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"{path}: {message}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _one_line(error: Exception) -> str:
    return re.sub(r"\s+", " ", str(error)).strip()[:300]


def printable(key: str, limit: int = 80) -> str:
    """A key as it may appear in a message: control characters escaped, long keys cut."""
    shown = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], key)
    return shown if len(shown) <= limit else f"{shown[:limit]}…"


# --- MLflow signatures (as found in the MLmodel file, already JSON-decoded) -------------------
#
# Either named columns (a pandas input example) or, for a model logged with a NumPy input example,
# one tensor. A tensor of shape (-1, n) is served as n fields, one row of values per instance: the
# contract's inputs, in the order written, are the tensor's columns; derived, they are x0 … x(n-1).
# Several named tensors (a Keras model with inputs a and b) are served the same way, one after the
# other: derived, a tensor `a` of shape (-1,) is the field a, one of shape (-1, 2) the fields a_0, a_1.
# Tensors whose instances are not rows of values (an image (-1, 28, 28), a string tensor, a shape
# with several variable dimensions) have no fields: the model is served through `invocations` only,
# in MLflow's own tensor formats, and its contract has no inputs.
