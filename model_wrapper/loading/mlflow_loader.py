"""Model loading through MLflow; with `sklearn_loader` (which imports MLflow only for `invocations`, after
`ready`), the only wrapper code that imports it (import-linter holds that).

Called once at start-up by `model_wrapper.server` (in a background thread, so that liveness
answers while it works). Downloads the artifacts, finds the contract, checks it against the
signature, loads the model and picks a backend: native scikit-learn on arrays where that gives
the same answers as pyfunc, pyfunc otherwise. MLflow's and boto3's errors end here, as a
`LoadFailure` with a one-line reason.
"""

from __future__ import annotations

import base64
import importlib.metadata
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import BAD_REQUEST

from model_wrapper.config.settings import WrapperSettings
from model_wrapper.contract.signature import (
    TensorInput,
    contract_from_signature,
    signature_mismatches,
    signature_tensors,
    tensors_without_fields,
    within_tensor_range,
)
from model_wrapper.contract.spec import CONTRACT_FILE, HOW_TO_ADD, Contract, ContractError, FieldType, parse_contract
from model_wrapper.errors import LoadFailure, SourceUnavailable
from model_wrapper.loading.environment import EnvironmentCheck, check_environment
from model_wrapper.loading.outage import endpoint_down, fetch_failure
from model_wrapper.predict.array_inputs import array_dtype as _array_dtype
from model_wrapper.predict.array_inputs import array_safe as _array_safe
from model_wrapper.predict.array_inputs import column_order as _column_order
from model_wrapper.predict.array_inputs import quiet_feature_name_warning as _quiet_feature_name_warning
from model_wrapper.predict.backends import PyfuncBackend, Scorer, SklearnArrayBackend, frame_builder, has_probabilities
from model_wrapper.predict.predictor import LoadedModel, ModelBackend

log = logging.getLogger(__name__)
MODEL_CONTRACT_PATHS = (CONTRACT_FILE, f"extra_files/{CONTRACT_FILE}")
JSON = "application/json"
# The serving input example is the start-up test and the docs' example of an invocations-only model.
MAX_SERVING_EXAMPLE_BYTES = 1 << 20


def load_model(settings: WrapperSettings, workdir: Path) -> LoadedModel:
    """Download (into `workdir`, which must outlive the model), check and load the model named by
    the settings; raise LoadFailure with the reason."""
    local = _download(settings.model_source, workdir / "model", settings.mlflow_s3_endpoint_url)
    try:
        mlmodel = Model.load(str(local))
    except Exception as e:
        raise LoadFailure(f"{settings.model_source} is not an MLflow model (no readable MLmodel file): "
                          f"{_first_line(e)}") from e
    run_id = settings.model_run_id or mlmodel.run_id
    signature = signature_inputs(mlmodel)
    contract, origin = find_contract(local, run_id, mlmodel, signature, workdir / "run")
    if signature is not None and (problems := signature_mismatches(contract, signature)):
        raise LoadFailure(f"the {origin} disagrees with the model signature: {'; '.join(problems)}")
    if signature is None and not contract.inputs:
        raise LoadFailure(f"the {origin} has no inputs and the model no signature, so the API cannot be described; "
                          f"{HOW_TO_ADD}")
    # The signature passed its checks just above.
    without_fields = tensors_without_fields(signature) if signature else None
    tensors = signature_tensors(signature) if signature and without_fields is None else None
    if tensors is not None:
        contract = within_tensor_range(contract, tensors)
    environment = check_model_environment(local, mlmodel, settings)
    try:
        # MLflow's own requirements check scans every installed distribution (a second or more
        # of start-up); check_model_environment above reads the model's requirements directly instead.
        pyfunc = mlflow.pyfunc.load_model(str(local), suppress_warnings=True)
    except Exception as e:
        raise LoadFailure(environment.explain(f"the model cannot be loaded: {_first_line(e)}")) from e
    params = params_schema(mlmodel)
    if without_fields is not None:  # served through invocations only: predict has no fields to take
        backend: ModelBackend = PyfuncBackend(pyfunc, [], None, scorer(pyfunc), to_input=_no_fields)
    else:
        backend = choose_backend(pyfunc, contract, signature, tensors, params=params)
    log.info("model %s version %s: loaded (%s; contract from %s)", settings.model_name, settings.model_version,
             backend.description, origin)
    return LoadedModel(contract=contract, contract_origin=origin, backend=backend, run_id=run_id, params=params,
                       environment=tuple(environment.warnings), files=local,
                       without_fields=tuple(without_fields or ()), signature=tuple(signature or ()),
                       outputs=signature_outputs(mlmodel),
                       serving_example=serving_example(mlmodel, local) if without_fields else None)


def serving_example(mlmodel: Model, local: Path) -> bytes | None:
    """The body MLflow saved for `invocations` with the input example (`serving_input_example.json`),
    when it has one of at most MAX_SERVING_EXAMPLE_BYTES."""
    info = mlmodel.saved_input_example_info or {}
    relative = info.get("serving_input_path")
    if not isinstance(relative, str):
        return None
    path = (local / relative).resolve()
    if not path.is_relative_to(local.resolve()) or not path.is_file():
        return None
    if path.stat().st_size > MAX_SERVING_EXAMPLE_BYTES:
        log.warning("the model's serving input example is over %d bytes; not used", MAX_SERVING_EXAMPLE_BYTES)
        return None
    return path.read_bytes()


def _no_fields(rows: list[tuple[Any, ...]]) -> Any:
    raise AssertionError("a model whose inputs cannot be fields has no predict")  # the predictor answers 404


def find_contract(local: Path, run_id: str | None, mlmodel: Model, signature: list[dict[str, Any]] | None,
                  run_dir: Path) -> tuple[Contract, str]:
    """The contract and where it came from, in the documented look-up order."""
    for relative in MODEL_CONTRACT_PATHS:
        if (local / relative).is_file():
            return _parse(local / relative, f"model's {relative}")
    if run_id and (path := _run_contract(run_id, run_dir)) is not None:
        return _parse(path, f"run's {CONTRACT_FILE}")
    if signature is None:
        raise LoadFailure(f"no {CONTRACT_FILE} and no model signature, so the API cannot be described; {HOW_TO_ADD}")
    try:
        order = [str(column.get("name")) for column in signature]
        outputs = mlmodel.signature.outputs.to_dict() if mlmodel.signature and mlmodel.signature.outputs else None
        return contract_from_signature(signature, _input_example(mlmodel, local, order), outputs), "model signature"
    except ContractError as e:
        raise LoadFailure(str(e)) from e


def signature_inputs(mlmodel: Model) -> list[dict[str, Any]] | None:
    """The signature's inputs as the MLmodel file lists them (columns, or a tensor), or None."""
    if mlmodel.signature is None or mlmodel.signature.inputs is None:
        return None
    inputs: list[dict[str, Any]] = mlmodel.signature.inputs.to_dict()
    return inputs


def signature_outputs(mlmodel: Model) -> tuple[dict[str, Any], ...]:
    """The signature's outputs as the MLmodel file lists them (empty without them)."""
    if mlmodel.signature is None or mlmodel.signature.outputs is None:
        return ()
    return tuple(mlmodel.signature.outputs.to_dict())


def params_schema(mlmodel: Model) -> list[dict[str, Any]]:
    """The signature's params (name, type, default, shape), JSON-ready; empty without them."""
    if mlmodel.signature is None or mlmodel.signature.params is None:
        return []
    params: list[dict[str, Any]] = mlmodel.signature.params.to_dict()
    return params


def choose_backend(pyfunc: Any, contract: Contract, signature: list[dict[str, Any]] | None,
                   tensors: list[TensorInput] | None, *, params: list[dict[str, Any]] | None = None) -> ModelBackend:
    """Native arrays for plain numeric scikit-learn models; pyfunc for everything else. `tensors`:
    what a tensor signature takes. A model with params goes through pyfunc, which applies them."""
    raw = _sklearn_estimator(pyfunc)
    estimator = None if params else raw
    classifier = raw if raw is not None else _native_classifier(pyfunc)
    columns = _column_order(contract, signature, estimator, positional=tensors is not None)
    score = scorer(pyfunc)
    schema = pyfunc.metadata.get_input_schema()
    if tensors is not None:
        tensor = tensors[0]
        # Pyfunc hands the model an unnamed tensor as it is given: any numeric one is the same array natively.
        if estimator is not None and len(tensors) == 1 and tensor.field_type in (FieldType.number, FieldType.integer) \
                and len(tensor.shape) == 2 and not tensor.named:
            _quiet_feature_name_warning()
            return SklearnArrayBackend(estimator, columns, np.dtype(tensor.dtype), score, order="C")
        builder = tensor_builder(tensor) if len(tensors) == 1 else group_builder(tensors, schema)
        return PyfuncBackend(pyfunc, columns, classifier, score, to_input=builder)
    if estimator is not None and _array_safe(contract, signature, columns):
        _quiet_feature_name_warning()
        return SklearnArrayBackend(estimator, columns, np.dtype(_array_dtype(contract, signature)), score)
    to_input = frame_builder(columns) if schema is None else signature_frame_builder(columns, contract, schema)
    return PyfuncBackend(pyfunc, columns, classifier, score, to_input=to_input)


def tensor_builder(tensor: TensorInput) -> Callable[[list[tuple[Any, ...]]], Any]:
    """Rows as the one tensor the model takes: its dtype, and shape (-1,) or (-1, n)."""
    dtype, flat = np.dtype(tensor.dtype), len(tensor.shape) == 1

    def build(rows: list[tuple[Any, ...]]) -> Any:
        array = np.array(rows, dtype=dtype)
        return array.reshape(-1) if flat else array

    return build


def group_builder(tensors: list[TensorInput], schema: Any) -> Callable[[list[tuple[Any, ...]]], Any]:
    """Rows as the named tensors the model takes, each row's values in signature order, parsed
    by MLflow's own code as an `inputs` body ({name: values}) is."""
    from mlflow.utils.proto_json_utils import parse_tf_serving_input

    spans, start = [], 0
    for tensor in tensors:
        spans.append((tensor.name, start, start + tensor.width, len(tensor.shape) == 1))
        start += tensor.width

    def build(rows: list[tuple[Any, ...]]) -> Any:
        inputs = {name: [row[low] if flat else list(row[low:high]) for row in rows] for name, low, high, flat in spans}
        return parse_tf_serving_input({"inputs": inputs}, schema=schema)

    return build


def signature_frame_builder(columns: list[str], contract: Contract,
                            schema: Any) -> Callable[[list[tuple[Any, ...]]], Any]:
    """Rows as the DataFrame `mlflow models serve` makes of the same `dataframe_split` body: cast by
    MLflow to the signature's types (float32, int32, base64 binary, datetime). An optional column
    left out of every instance is left out of the frame, as it is of a `dataframe_records` body's."""
    from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

    optional = [index for index, name in enumerate(columns) if not contract.inputs[name].required]

    def build(rows: list[tuple[Any, ...]]) -> Any:
        absent = [index for index in optional if all(row[index] is None for row in rows)]
        if absent:
            kept = [index for index in range(len(columns)) if index not in absent]
            return dataframe_from_parsed_json({"columns": [columns[i] for i in kept],
                                               "data": [[row[i] for i in kept] for row in rows]}, "split", schema)
        return dataframe_from_parsed_json({"columns": columns, "data": [list(row) for row in rows]}, "split", schema)

    return build


def scorer(pyfunc: Any) -> Scorer:
    """MLflow's own scoring-server code, answered as `mlflow.pyfunc.scoring_server.init` does: an
    MlflowException is its JSON (`serialize_as_json`) with its status; any other error (the
    model's answer is not JSON) is Starlette's plain 500. One difference: a body nested too deeply
    for Python's JSON parser is a 400 here (MLflow answers 500), never a 5xx for what a client sent."""
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT
    from mlflow.pyfunc import scoring_server

    # `mlflow models serve` sets this in its process; type-hinted models read it.
    os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"
    schema = pyfunc.metadata.get_input_schema()

    def score(body: bytes, content_type: str) -> tuple[int, bytes, str]:
        try:
            result = scoring_server.invocations(body, content_type, pyfunc, schema)
        except MlflowException as e:
            return e.get_http_status_code(), e.serialize_as_json().encode(), JSON
        except RecursionError:
            error = MlflowException("Ensure that input is a valid JSON formatted string: it is nested too deeply",
                                    error_code=BAD_REQUEST)
            return 400, error.serialize_as_json().encode(), JSON
        except Exception as e:
            log.error("invocations: the model's answer could not be returned: %s: %s", type(e).__name__, e)
            return 500, b"Internal Server Error", "text/plain; charset=utf-8"
        return result.status, result.response.encode(), result.mimetype

    return score


def check_model_environment(local: Path, mlmodel: Model, settings: WrapperSettings) -> EnvironmentCheck:
    """The model's logged environment against this runtime; raise LoadFailure when it cannot serve."""
    check = check_environment(local, mlmodel.flavors, installed=installed_version, python=platform.python_version())
    if (reason := check.fatal(settings.env_mismatch)) is not None:
        raise LoadFailure(reason)
    if check.mismatches or check.other:
        log.warning("model %s version %s: its environment differs from this runtime's: %s", settings.model_name,
                    settings.model_version, "; ".join(str(d) for d in check.mismatches + check.other))
    return check


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _download(source: str, target: Path, s3_endpoint: str | None) -> Path:
    try:
        target.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target)))
    except Exception as e:
        failure = fetch_failure(f"could not download the model from {source}: {_first_line(e)}", e)
        if not isinstance(failure, SourceUnavailable) and endpoint_down(s3_endpoint):
            failure = SourceUnavailable(f"{failure} (S3 at {s3_endpoint} does not answer)")
        raise failure from e


def _run_contract(run_id: str, target: Path) -> Path | None:
    try:
        names = {info.path for info in mlflow.artifacts.list_artifacts(run_id=run_id)}
        if CONTRACT_FILE not in names:
            return None
        target.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CONTRACT_FILE,
                                                        dst_path=str(target)))
    except MlflowException as e:
        raise fetch_failure(f"could not read the artifacts of run {run_id}: {_first_line(e)}", e) from e
    except OSError as e:
        raise fetch_failure(f"could not download {CONTRACT_FILE} from run {run_id}: {_first_line(e)}", e) from e


def beside_contract(model: LoadedModel, name: str, target: Path) -> Path | None:
    """The file `name` logged beside the model's contract (the model's files, or the run's), or None."""
    if model.contract_origin.startswith("model's") and model.files is not None:
        folder = Path(model.contract_origin.removeprefix("model's ")).parent
        path = model.files / folder / name
        return path if path.is_file() else None
    if model.contract_origin.startswith("run's") and model.run_id:
        try:
            parent = str(Path(name).parent)
            listed = mlflow.artifacts.list_artifacts(run_id=model.run_id,
                                                     artifact_path=None if parent == "." else parent)
            if name not in {info.path for info in listed}:
                return None
            target.mkdir(parents=True, exist_ok=True)
            return Path(mlflow.artifacts.download_artifacts(run_id=model.run_id, artifact_path=name,
                                                            dst_path=str(target)))
        except (MlflowException, OSError) as e:
            raise fetch_failure(f"could not download {name} from run {model.run_id}: {_first_line(e)}", e) from e
    return None


def _parse(path: Path, origin: str) -> tuple[Contract, str]:
    try:
        return parse_contract(path.read_bytes()), origin
    except ContractError as e:
        raise LoadFailure(f"the {origin} is unusable: {e}") from e


def _input_example(mlmodel: Model, local: Path, order: list[str] | None = None) -> list[Any] | None:
    """The input example as records (columns) or rows of values (tensors; named ones in `order`)."""
    try:
        example = mlmodel.load_input_example(str(local))
    except Exception:  # an unreadable example only costs the derived contract its examples
        log.warning("the model's input example could not be read; the derived contract has no examples")
        return None
    to_dict = getattr(example, "to_dict", None)
    if to_dict is not None:
        records: list[dict[str, Any]] = to_dict(orient="records")
        return [{name: _as_json_value(value) for name, value in record.items()} for record in records]
    if isinstance(example, np.ndarray):  # a tensor model's rows of values
        rows: list[Any] = example.tolist()
        return rows
    if isinstance(example, dict) and example and all(isinstance(v, np.ndarray) for v in example.values()):
        # Named tensors: each instance's values, tensor after tensor, in signature order.
        names = order if order and set(order) == set(example) else list(example)
        # Each tensor's own values (tolist per array: joined, int32 values would turn float).
        columns = [example[name].reshape(len(example[name]), -1).tolist() for name in names]
        if len({len(rows) for rows in columns}) == 1:
            return [[value for part in parts for value in part] for parts in zip(*columns, strict=True)]
    return example if isinstance(example, list) else None


def _as_json_value(value: Any) -> Any:
    """An example value as a client sends it: bytes as base64, a time as ISO 8601 (MLflow's JSON)."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _sklearn_estimator(pyfunc: Any) -> Any | None:
    if "sklearn" not in pyfunc.metadata.flavors:
        return None
    try:
        return pyfunc.get_raw_model()
    except (NotImplementedError, AttributeError):
        return None


def _native_classifier(pyfunc: Any) -> Any | None:
    """The model object behind a gradient-boosting flavour (XGBoost, LightGBM, CatBoost), when it
    is a classifier with `predict_proba` (their scikit-learn API); else None."""
    if not {"xgboost", "lightgbm", "catboost"} & set(pyfunc.metadata.flavors):
        return None
    try:
        raw = pyfunc.get_raw_model()
    except (NotImplementedError, AttributeError):
        return None
    return raw if has_probabilities(raw) else None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]
