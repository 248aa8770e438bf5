"""Model loading: the one module that imports MLflow.

Called once at start-up by `model_wrapper.server` (in a background thread, so that liveness
answers while it works). Downloads the artifacts, finds the contract, checks it against the
signature, loads the model and picks a backend: native scikit-learn on arrays where that gives
the same answers as pyfunc, pyfunc otherwise. MLflow's and boto3's errors end here, as a
`LoadFailure` with a one-line reason.
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from model_wrapper.backends import PyfuncBackend, Scorer, SklearnArrayBackend, frame_builder
from model_wrapper.contract import (
    CONTRACT_FILE,
    HOW_TO_ADD,
    Contract,
    ContractError,
    FieldType,
    TensorInput,
    contract_from_signature,
    parse_contract,
    signature_mismatches,
    tensor_input,
    within_tensor_range,
)
from model_wrapper.errors import MalformedRequest, UnsupportedMediaType, for_status
from model_wrapper.predictor import LoadedModel, LoadFailure, ModelBackend
from model_wrapper.settings import WrapperSettings

log = logging.getLogger(__name__)
MODEL_CONTRACT_PATHS = (CONTRACT_FILE, f"extra_files/{CONTRACT_FILE}")
# Signature column types the array fast path reproduces exactly (float32 columns would not).
_FAST_SIGNATURE_TYPES = {"double", "long", "integer"}


def load_model(settings: WrapperSettings, workdir: Path) -> LoadedModel:
    """Download (into `workdir`, which must outlive the model), check and load the model named by
    the settings; raise LoadFailure with the reason."""
    local = _download(settings.model_source, workdir / "model")
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
    tensor = tensor_input(signature) if signature else None  # the signature passed its checks just above
    if tensor is not None:
        contract = within_tensor_range(contract, tensor)
    warn_about_requirements(local, settings.model_name, settings.model_version)
    try:
        # MLflow's own requirements check scans every installed distribution (a second or more
        # of start-up); warn_about_requirements above checks the model's pins directly instead.
        pyfunc = mlflow.pyfunc.load_model(str(local), suppress_warnings=True)
    except Exception as e:
        raise LoadFailure(f"the model cannot be loaded: {_first_line(e)}") from e
    backend = choose_backend(pyfunc, contract, signature, tensor)
    log.info("model %s version %s: loaded (%s; contract from %s)", settings.model_name, settings.model_version,
             backend.description, origin)
    return LoadedModel(contract=contract, contract_origin=origin, backend=backend, run_id=run_id)


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
        return contract_from_signature(signature, _input_example(mlmodel, local)), "model signature"
    except ContractError as e:
        raise LoadFailure(str(e)) from e


def signature_inputs(mlmodel: Model) -> list[dict[str, Any]] | None:
    """The signature's inputs as the MLmodel file lists them (columns, or a tensor), or None."""
    if mlmodel.signature is None or mlmodel.signature.inputs is None:
        return None
    inputs: list[dict[str, Any]] = mlmodel.signature.inputs.to_dict()
    return inputs


def choose_backend(pyfunc: Any, contract: Contract, signature: list[dict[str, Any]] | None,
                   tensor: TensorInput | None) -> ModelBackend:
    """Native arrays for plain numeric scikit-learn models; pyfunc for everything else. `tensor`:
    the signature's one tensor, when it is a tensor signature."""
    estimator = _sklearn_estimator(pyfunc)
    columns = _column_order(contract, signature, estimator, positional=tensor is not None)
    score = scorer(pyfunc)
    if tensor is not None:
        # Pyfunc hands the model an unnamed tensor as it is given: any numeric one is the same array natively.
        if estimator is not None and tensor.field_type in (FieldType.number, FieldType.integer) \
                and len(tensor.shape) == 2 and not tensor.named:
            _quiet_feature_name_warning()
            return SklearnArrayBackend(estimator, columns, np.dtype(tensor.dtype), score, order="C")
        return PyfuncBackend(pyfunc, columns, estimator, score, to_input=tensor_builder(tensor))
    if estimator is not None and _array_safe(contract, signature, columns):
        _quiet_feature_name_warning()
        return SklearnArrayBackend(estimator, columns, np.dtype(_array_dtype(contract, signature)), score)
    return PyfuncBackend(pyfunc, columns, estimator, score, to_input=frame_builder(columns))


def tensor_builder(tensor: TensorInput) -> Callable[[list[tuple[Any, ...]]], Any]:
    """Rows as the one tensor the model takes: its dtype, and shape (-1,) or (-1, n)."""
    dtype, flat = np.dtype(tensor.dtype), len(tensor.shape) == 1

    def build(rows: list[tuple[Any, ...]]) -> Any:
        array = np.array(rows, dtype=dtype)
        return array.reshape(-1) if flat else array

    return build


def _quiet_feature_name_warning() -> None:
    # The wrapper builds arrays in the fitted column order itself, so sklearn's warning that an
    # array has no column names says nothing here.
    warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)


def scorer(pyfunc: Any) -> Scorer:
    """MLflow's own scoring-server code, so `invocations` answers exactly as `mlflow models serve`."""
    from mlflow.pyfunc import scoring_server

    schema = pyfunc.metadata.get_input_schema()

    def score(body: bytes, content_type: str) -> tuple[int, bytes, str]:
        try:
            result = scoring_server.invocations(body, content_type, pyfunc, schema)
        except MlflowException as e:
            # Whatever MLflow could not score was the body's fault: the model passed its warm-up.
            raise for_status(min(e.get_http_status_code(), 400), f"cannot score this input: {_first_line(e)}") from None
        except Exception as e:
            raise MalformedRequest(f"cannot score this input: {_first_line(e)}") from None
        if result.status == 415:
            raise UnsupportedMediaType(_first_line(Exception(result.response)))
        if result.status != 200:
            raise for_status(result.status, _first_line(Exception(result.response)))
        return result.status, result.response.encode(), result.mimetype

    return score


def warn_about_requirements(local: Path, name: str, version: str) -> list[str]:
    """Log (and return) the model's pinned requirements that this image does not have."""
    path = local / "requirements.txt"
    pins = [line.split(";")[0].strip() for line in path.read_text().splitlines()] if path.is_file() else []
    problems = []
    for pin in pins:
        package, _, wanted = pin.partition("==")
        if not wanted or not package or package.startswith(("-", "#")):
            continue
        try:
            installed = importlib.metadata.version(package.split("[")[0])
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != wanted.strip():
            problems.append(f"{package} {wanted.strip()} (image has {installed})")
    if problems:
        log.warning("model %s version %s was logged with %s; add them to the image (see the Dockerfile's "
                    "EXTRA_REQUIREMENTS) if predictions look wrong", name, version, ", ".join(problems))
    return problems


def _download(source: str, target: Path) -> Path:
    try:
        target.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target)))
    except Exception as e:
        raise LoadFailure(f"could not download the model from {source}: {_first_line(e)}") from e


def _run_contract(run_id: str, target: Path) -> Path | None:
    try:
        names = {info.path for info in mlflow.artifacts.list_artifacts(run_id=run_id)}
        if CONTRACT_FILE not in names:
            return None
        target.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CONTRACT_FILE,
                                                        dst_path=str(target)))
    except MlflowException as e:
        raise LoadFailure(f"could not read the artifacts of run {run_id}: {_first_line(e)}") from e
    except OSError as e:
        raise LoadFailure(f"could not download {CONTRACT_FILE} from run {run_id}: {_first_line(e)}") from e


def _parse(path: Path, origin: str) -> tuple[Contract, str]:
    try:
        return parse_contract(path.read_bytes()), origin
    except ContractError as e:
        raise LoadFailure(f"the {origin} is unusable: {e}") from e


def _input_example(mlmodel: Model, local: Path) -> list[Any] | None:
    try:
        example = mlmodel.load_input_example(str(local))
    except Exception:  # an unreadable example only costs the derived contract its examples
        log.warning("the model's input example could not be read; the derived contract has no examples")
        return None
    to_dict = getattr(example, "to_dict", None)
    if to_dict is not None:
        records: list[dict[str, Any]] = to_dict(orient="records")
        return records
    if isinstance(example, np.ndarray):  # a tensor model's rows of values
        rows: list[Any] = example.tolist()
        return rows
    return example if isinstance(example, list) else None


def _sklearn_estimator(pyfunc: Any) -> Any | None:
    if "sklearn" not in pyfunc.metadata.flavors:
        return None
    try:
        return pyfunc.get_raw_model()
    except (NotImplementedError, AttributeError):
        return None


def _column_order(contract: Contract, signature: list[dict[str, Any]] | None, estimator: Any, *,
                  positional: bool = False) -> list[str]:
    """The order the model takes its inputs in. `positional`: a tensor, whose columns are the
    contract's inputs in the order written (or the fitted columns, when the contract names them)."""
    fitted = list(getattr(estimator, "feature_names_in_", []))
    if fitted and set(fitted) == set(contract.inputs):
        return [str(name) for name in fitted]
    if positional:
        return list(contract.inputs)
    if fitted:
        missing = sorted(set(fitted) - set(contract.inputs))
        extra = sorted(set(contract.inputs) - set(fitted))
        raise LoadFailure(f"the contract's inputs differ from the columns the model was trained on: "
                          f"missing {missing}, not used by the model {extra}")
    order = [str(column["name"]) for column in signature or [] if column.get("name") in contract.inputs]
    return order + [name for name in contract.inputs if name not in order]


def _array_safe(contract: Contract, signature: list[dict[str, Any]] | None, columns: list[str]) -> bool:
    specs = [contract.inputs[name] for name in columns]
    if not all(spec.required and spec.type.value in ("number", "integer") for spec in specs):
        return False
    return signature is None or all(column.get("type") in _FAST_SIGNATURE_TYPES for column in signature)


def _array_dtype(contract: Contract, signature: list[dict[str, Any]] | None) -> type[Any]:
    # Pyfunc hands scikit-learn an int64 frame only when every column is an integer one.
    if signature:
        kinds = {column.get("type") for column in signature}
    else:
        kinds = {spec.type.value for spec in contract.inputs.values()}
    return np.int64 if kinds <= {"long", "integer"} else np.float64


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]
