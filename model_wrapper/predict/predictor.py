"""Transport-free prediction: contract validation, the model call, and the answer as JSON bytes.

Used by the endpoints in `model_wrapper.http.app`; filled by `model_wrapper.loading.mlflow_loader` once the model is
loaded. Knows nothing about HTTP beyond the status codes its errors carry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from model_wrapper.contract.signature import HOW_TO_INVOKE, TensorInput, describe_tensors
from model_wrapper.contract.spec import Contract
from model_wrapper.errors import (
    InvalidInput,
    LoadFailure,
    ModelFault,
    NotFound,
    NotReady,
    PredictionFailed,
    WrapperError,
)
from model_wrapper.predict import v2
from model_wrapper.predict.numeric_batch import NumericBatch, numeric_batch
from model_wrapper.predict.schema import RequestSchema, build_schema

log = logging.getLogger(__name__)
# A model whose single-instance prediction takes less than this runs on the event loop: handing
# it to a thread would cost more than the prediction. Slower models go to a worker thread.
INLINE_BUDGET_SECONDS = 0.002
Rows = list[tuple[Any, ...]] | NDArray[Any]
"""Validated instances: tuples in the model's column order, or the array a backend's `layout` names."""
Layout = tuple[np.dtype[Any], Literal["C", "F"]]


class ModelBackend(Protocol):
    """A loaded model as the predictor sees it (implemented in `model_wrapper.loading.mlflow_loader`)."""

    columns: list[str]
    """Input columns in the order the model expects them."""
    classes: list[Any] | None
    """Class values in probability-column order, for classifiers with predict_proba; else None."""
    fast: bool
    """True when predict runs natively on arrays (no per-request DataFrame)."""
    description: str
    layout: Layout | None
    """The dtype and memory order of the array `predict` builds, when it takes a ready one too; else None."""

    def predict(self, rows: Rows, params: dict[str, Any] | None = None) -> tuple[Any, Any | None]:
        """Predictions and (for classifiers) probabilities for rows in `columns` order, with the
        request's `params` (already checked against the model's params schema)."""
        ...

    def invoke(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        """Answer an MLflow scoring-server request exactly as `mlflow models serve` would."""
        ...


@dataclass(frozen=True)
class LoadedModel:
    contract: Contract
    contract_origin: str
    backend: ModelBackend
    run_id: str | None
    params: list[dict[str, Any]] = field(default_factory=list)
    """The model's params schema: name, type (MLflow's), default, shape (None or (-1,))."""
    environment: tuple[str, ...] = ()
    """How the model's logged environment differs from this runtime's (served anyway, ENV_MISMATCH=warn)."""
    files: Path | None = None
    """The downloaded model directory (where the evaluation data logged beside the contract is)."""
    without_fields: tuple[TensorInput, ...] = ()
    """The tensors of a model whose inputs cannot be fields: it has no predict, only invocations."""
    serving_example: bytes | None = None
    """MLflow's saved `invocations` body for such a model: its start-up test and its docs' example."""
    signature: tuple[dict[str, Any], ...] = ()
    """The MLflow signature's inputs as the MLmodel file lists them (empty without one)."""
    outputs: tuple[dict[str, Any], ...] = ()
    """The signature's outputs, likewise."""


@dataclass
class Seen:
    """What one predict gave the model and what it answered, as the inference log records it."""

    rows: list[tuple[Any, ...]] | NDArray[Any] | None = None
    """The validated instances, in the model's column order (None when the body did not parse)."""
    answer: dict[str, Any] | None = None
    """predictions, and probabilities and labels where there are (None when the model failed)."""


@dataclass
class Predictor:
    """The serving state of one model: loading, then ready (or failed), then predicting."""

    name: str
    version: str
    max_batch: int
    reason: str = "the model is still loading"
    ready: bool = False
    draining: bool = False
    """SIGTERM came: readiness fails so traffic moves away, while predict still answers (server.py's drain)."""
    inline: bool = False
    model: LoadedModel | None = None
    schema: RequestSchema | None = None
    example_answer: dict[str, Any] | None = None
    """The answer to the contract's examples, shown as the response example in the docs."""
    batch: NumericBatch | None = None
    """The cheaper validator for numeric instances, tried before `schema` (which decides when it cannot)."""
    v2_inputs: list[v2.Port] = field(default_factory=list)
    """The model's inputs as the Open Inference Protocol describes them, in the backend's row order."""
    _label_of: dict[Any, str] = field(default_factory=dict)

    def install(self, model: LoadedModel) -> None:
        """Take a loaded model; it serves once `warm_up` has predicted the contract's examples."""
        backend, contract = model.backend, model.contract
        title = contract.title or self.name
        self.batch = None
        if not model.without_fields:
            self.schema = build_schema(contract, backend.columns, max_batch=self.max_batch, title=title,
                                       classes=len(backend.classes) if backend.classes else None, params=model.params)
            if (layout := backend.layout) is not None and not model.params:
                self.batch = numeric_batch(contract, backend.columns, max_batch=self.max_batch, dtype=layout[0],
                                           order=layout[1])
        self._label_of = label_map(contract.labels, backend.classes) if contract.labels else {}
        self.v2_inputs = _v2_inputs(model)
        self.model = model
        self.reason = "predicting the contract's examples"

    def warm_up(self) -> None:
        """Predict the contract's examples; ready only if they all work."""
        model = self.installed()
        if model.without_fields:
            self._warm_up_invocations(model)
            self.ready, self.reason = True, "ready"
            return
        examples = model.contract.examples or _examples_from_fields(model.contract)
        try:
            if examples:
                body = orjson.dumps({"instances": examples})
                answer = orjson.loads(self.predict_body(body))
                self._check_labels(answer, len(examples))
                self.example_answer = answer
                self.inline = model.backend.fast and self._fastest(orjson.dumps({"instances": examples[:1]})) < \
                    INLINE_BUDGET_SECONDS
            else:
                log.warning("model %s version %s: the contract has no examples; ready without a test prediction",
                            self.name, self.version)
        except WrapperError as e:
            raise LoadFailure(f"the contract's examples cannot be predicted: {e.message}") from e
        self.ready, self.reason = True, "ready"

    def _warm_up_invocations(self, model: LoadedModel) -> None:
        """A model without fields is tried on MLflow's saved serving input example, through invocations."""
        if model.serving_example is None:
            log.warning("model %s version %s: no serving input example; ready without a test prediction",
                        self.name, self.version)
            return
        status, answer, _ = model.backend.invoke(model.serving_example, "application/json")
        if status != 200:
            raise LoadFailure(f"the model's serving input example cannot be predicted through invocations: "
                              f"{status} {answer[:300].decode(errors='replace')}")
        self.example_answer = orjson.loads(answer)

    def predict_body(self, body: bytes, seen: Seen | None = None) -> bytes:
        """Answer a `{"instances": [...]}` body with `{"predictions": [...], ...}` as JSON bytes; with
        `seen`, also keep there the rows and outputs as the model saw them (for the inference log)."""
        schema = self.schema
        if schema is None or self.model is None:
            if self.model is not None and self.model.without_fields:
                takes = describe_tensors(list(self.model.without_fields))
                raise NotFound(f"this model has no predict: it takes {takes}, which cannot be given as fields; "
                               f"{HOW_TO_INVOKE}")
            raise NotReady(self.reason)
        features = self.batch.array(body) if self.batch is not None else None
        rows, params = (features, None) if features is not None else schema.parse(body)
        if seen is not None:
            seen.rows = rows
        predictions, probabilities = self._predict(self.model, rows, params)
        answer = self._answer(predictions, probabilities)
        if seen is not None:
            seen.answer = answer
        try:
            return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY, default=_jsonable)
        except TypeError as e:
            log.error("model %s version %s: the prediction cannot be answered as JSON: %s", self.name, self.version, e)
            raise ModelFault(f"the model's prediction cannot be answered as JSON: {e}") from e

    def infer_v2(self, body: bytes, model_name: str, seen: Seen | None = None) -> bytes:
        """Answer an Open Inference Protocol request body (see `model_wrapper.predict.v2`) as JSON bytes;
        with `seen`, as `predict_body` does, when the model's inputs are columns (its rows are then the
        model's rows; a tensor's flattened values are not logged)."""
        if not self.ready or self.model is None:
            raise NotReady(self.reason)
        if self.model.without_fields:
            takes = describe_tensors(list(self.model.without_fields))
            raise NotFound(f"this model takes {takes}, which V2 infer does not serve; {HOW_TO_INVOKE}")
        rows, request = v2.decode(body, self.v2_inputs)
        params = v2.params_of(request) if self.model.params else None
        logged = seen if seen is not None and _in_column_order(self.v2_inputs, self.model.backend.columns) else None
        if logged is not None:
            logged.rows = rows
        predictions, probabilities = self._predict(self.model, rows, params)
        if logged is not None:
            logged.answer = self._answer(predictions, probabilities)
        # Probabilities only when asked for by name: MLServer's MLflow runtime gives no such output.
        extra = {"probabilities": probabilities} if probabilities is not None else {}
        return v2.encode(model_name, self.version, request, {"output-1": predictions}, extra)

    def _answer(self, predictions: Any, probabilities: Any | None) -> dict[str, Any]:
        """predictions, and probabilities and labels where there are: predict's answer, and what the
        inference log keeps of any route's."""
        answer: dict[str, Any] = {"predictions": predictions}
        if probabilities is not None:
            answer["probabilities"] = probabilities
        if self._label_of:
            label_of = self._label_of
            answer["labels"] = list(map(label_of.get, _as_list(predictions)))
        return answer

    def _predict(self, model: LoadedModel, rows: list[tuple[Any, ...]] | NDArray[Any],
                 params: dict[str, Any] | None) -> tuple[Any, Any | None]:
        try:
            return model.backend.predict(rows, params)
        except WrapperError:
            raise
        except Exception as e:
            raise self._model_error(e) from e

    def _model_error(self, error: Exception) -> WrapperError:
        """What the model raised, with its whole message: an MLflow error keeps its status class
        (MLflow's own 5xx is the model's fault, its 4xx the input's); any other error, as
        `mlflow models serve` treats it, means the model rejects these instances."""
        message = str(getattr(error, "message", None) or error).strip() or type(error).__name__
        status = getattr(error, "get_http_status_code", None)
        if callable(status) and status() >= 500:
            log.error("model %s version %s: the model failed: %s", self.name, self.version, message)
            return ModelFault(f"the model failed: {message}")
        log.warning("model %s version %s: prediction failed: %s", self.name, self.version, message)
        if callable(status):  # MLflow refused the instances (its schema enforcement, its params check)
            return InvalidInput(f"MLflow cannot score these instances: {message}")
        return PredictionFailed(f"the model could not predict these instances: {message}")

    def invoke(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        """The MLflow scoring protocol, answered by the model's own MLflow machinery."""
        if not self.ready or self.model is None:
            raise NotReady(self.reason)
        return self.model.backend.invoke(body, content_type)

    def _fastest(self, body: bytes, tries: int = 5) -> float:
        """Seconds for one request, the best of a few (start-up may share the CPU with other work)."""
        best = float("inf")
        for _ in range(tries):
            started = time.perf_counter()
            self.predict_body(body)
            best = min(best, time.perf_counter() - started)
        return best

    def metadata(self) -> dict[str, Any]:
        model = self.installed()
        return {"name": self.name, "version": self.version, "run_id": model.run_id,
                "flavor": model.backend.description, "fast_path": model.backend.fast,
                "contract_origin": model.contract_origin, "environment": {"differences": list(model.environment)},
                "contract": model.contract.model_dump(mode="json", exclude_none=True)}

    def fail(self, reason: str) -> None:
        self.ready, self.reason = False, reason

    def installed(self) -> LoadedModel:
        if self.model is None:
            raise NotReady(self.reason)
        return self.model

    def _check_labels(self, answer: dict[str, Any], count: int) -> None:
        if self._label_of and None in answer.get("labels", []):
            unknown = [p for p, label in zip(answer["predictions"], answer["labels"], strict=True) if label is None]
            raise LoadFailure(f"the contract's labels do not cover the prediction(s) {unknown[:5]}; "
                              "labels[i] must name class i")
        if len(answer["predictions"]) != count:
            raise LoadFailure(f"the model returned {len(answer['predictions'])} predictions for {count} examples")


def _v2_inputs(model: LoadedModel) -> list[v2.Port]:
    columns = model.backend.columns
    types = {name: spec.type.value for name, spec in model.contract.inputs.items()}
    found = v2.ports(model.signature, columns, types)
    if all(port.column for port in found) and {port.name for port in found} == set(columns):
        found.sort(key=lambda port: columns.index(port.name))  # rows are in the model's column order
    return found


def _in_column_order(ports: list[v2.Port], columns: list[str]) -> bool:
    """Whether V2's decoded rows are the model's rows: one column per input, in the model's order."""
    return all(port.column for port in ports) and [port.name for port in ports] == list(columns)


def label_map(labels: list[str], classes: list[Any] | None) -> dict[Any, str]:
    """The contract's label of each prediction: the model's classes, in order, to its labels (class i's
    index to label i when the backend knows no classes). Used by the predictor's answers and the inference log."""
    if classes is not None:
        if len(classes) != len(labels):
            raise LoadFailure(f"the contract has {len(labels)} labels but the model has {len(classes)} classes "
                              f"({classes[:10]}); give one label per class, in class order")
        return {_native(value): label for value, label in zip(classes, labels, strict=True)}
    return {index: label for index, label in enumerate(labels)}


def _examples_from_fields(contract: Contract) -> list[dict[str, Any]]:
    """One instance from the fields' own examples, when every required field has one."""
    instance = {name: spec.example for name, spec in contract.inputs.items() if spec.example is not None}
    required = {name for name, spec in contract.inputs.items() if spec.required}
    return [instance] if required <= instance.keys() and instance else []


def _as_list(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_dict"):  # pandas objects from generic pyfunc models
        return value.to_dict(orient="records") if hasattr(value, "columns") else value.to_list()
    raise TypeError(f"cannot serialise {type(value).__name__}")

