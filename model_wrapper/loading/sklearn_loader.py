"""Scikit-learn models loaded without importing MLflow: its REST API, S3 and the MLmodel file, read directly.

Called by `model_wrapper.server` before `model_wrapper.loading.mlflow_loader.load_model`. MLflow's import is
most of a scikit-learn model's cold start; this path needs none of it for the models it can serve
exactly as MLflow would: a `models:/m-…` (logged model) or `s3://` source whose artifacts are on
S3, or a `file:///` model directory; the sklearn flavour loaded the way
`mlflow.sklearn._load_model_from_local_file` loads it (pickle, cloudpickle, or skops with the
MLmodel's `skops_trusted_types`), the model's own contract, a numeric column signature and no
params, so that `SklearnArrayBackend` serves it. For anything else `load_fast` returns None and
MLflow loads the model as before. `invocations` (MLflow's scoring protocol) still needs MLflow:
`DeferredScorer` imports it after `ready`.
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import os
import pickle
import platform
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from model_wrapper.config.settings import WrapperSettings
from model_wrapper.contract.signature import contract_from_signature, signature_mismatches
from model_wrapper.contract.spec import CONTRACT_FILE, ContractError, parse_contract
from model_wrapper.errors import LoadFailure
from model_wrapper.loading.environment import check_environment
from model_wrapper.loading.outage import fetch_failure
from model_wrapper.loading.skops_trust import prepare as prepare_skops_trust
from model_wrapper.predict.array_inputs import array_dtype, array_safe, column_order, quiet_feature_name_warning
from model_wrapper.predict.backends import SklearnArrayBackend
from model_wrapper.predict.predictor import LoadedModel

log = logging.getLogger(__name__)
FORMATS = ("pickle", "cloudpickle", "skops")
FETCHES = 8
CHUNK_BYTES = 1 << 20
# The MLflow settings under which this path fetches and loads exactly what MLflow would: those it handles
# itself, and those that change nothing about reading one model's files (telemetry, the server's own
# settings, request retries and timeouts). Any other MLFLOW_* variable that is set (TLS, auth plugins,
# S3 options, workspaces, one a newer MLflow adds) leaves the model to MLflow: unknown means not handled.
_HANDLED_ENV = frozenset({"MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_TOKEN",
                          "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION",
                          "MLFLOW_DISABLE_TELEMETRY", "MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT"})
_INERT_PREFIXES = ("MLFLOW_SERVER_", "MLFLOW_WEBHOOK_", "MLFLOW_HTTP_REQUEST_")


def mlflow_settings_handled(environ: Mapping[str, str]) -> bool:
    """Whether every MLflow setting in `environ` is one this path honours (or one that cannot matter)."""
    return all(name in _HANDLED_ENV or name.startswith(_INERT_PREFIXES)
               for name, value in environ.items() if name.startswith("MLFLOW_") and value)


def load_fast(settings: WrapperSettings, workdir: Path) -> tuple[LoadedModel, Callable[[], None]] | None:
    """The model, loaded without MLflow, and what to call once it is ready (readies `invocations`
    in the background); or None when only MLflow can load it exactly."""
    if not mlflow_settings_handled(os.environ) or not _pickles_allowed():
        return None
    if settings.model_source.startswith("file:///"):
        return _load_local(settings, Path(urllib.parse.unquote(urllib.parse.urlparse(settings.model_source).path)))
    location = artifact_location(settings.model_source, settings.mlflow_tracking_uri)
    if location is None:
        return None
    local = workdir / "model"
    s3 = _s3_client(settings)
    files = _listing(s3, location)
    if "MLmodel" not in files:
        return None  # MLflow explains a directory that is no model
    _fetch(s3, location, files, ["MLmodel"], local)
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    plan = _plan(mlmodel, files)
    if plan is None:
        return None
    if plan["contract"] is None and (run_id := settings.model_run_id or mlmodel.get("run_id")) \
            and _run_contract_absent(str(run_id), settings.mlflow_tracking_uri, s3) is not True:
        return None  # MLflow reads the run's contract.yaml (or says why it cannot look)
    _fetch(s3, location, files, [name for name in files if name != "MLmodel"], local)
    return _load(settings, local, mlmodel, plan)


def _load_local(settings: WrapperSettings, local: Path) -> tuple[LoadedModel, Callable[[], None]] | None:
    """A `file:///` model directory, read in place. Without a contract of its own, MLflow looks for the run's."""
    if not (local / "MLmodel").is_file():
        return None  # MLflow explains a directory that is no model
    files = [str(path.relative_to(local)) for path in local.rglob("*") if path.is_file()]
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    plan = _plan(mlmodel, files)
    if plan is None or plan["contract"] is None:
        return None
    return _load(settings, local, mlmodel, plan)


def artifact_location(source: str, tracking_uri: str | None) -> str | None:
    """The `s3://` folder holding the model's files, or None when the source is not one read here."""
    if source.startswith("s3://"):
        return source.rstrip("/")
    model_id = source.removeprefix("models:/")
    if not source.startswith("models:/m-") or "/" in model_id:
        return None
    answer = _rest(tracking_uri, f"logged-models/{urllib.parse.quote(model_id)}")
    try:
        uri = answer["model"]["info"]["artifact_uri"]
    except (KeyError, TypeError):
        return None
    return uri.rstrip("/") if isinstance(uri, str) and uri.startswith("s3://") else None


def _run_contract_absent(run_id: str, tracking_uri: str | None, s3: Any) -> bool | None:
    """True when the run has no contract.yaml of its own (as MLflow's client lists the run's S3
    artifacts); None when that cannot be told here."""
    answer = _rest(tracking_uri, f"runs/get?run_id={urllib.parse.quote(run_id)}")
    try:
        root = answer["run"]["info"]["artifact_uri"]
    except (KeyError, TypeError):
        return None
    if not isinstance(root, str) or not root.startswith("s3://"):
        return None
    try:
        return CONTRACT_FILE not in _listing(s3, root.rstrip("/"))
    except LoadFailure:
        return None


def _rest(tracking_uri: str | None, path: str) -> Any:
    """One GET of MLflow's REST API, as JSON; None when it cannot be answered here (MLflow then
    retries, or explains the failure in its words)."""
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return None
    request = urllib.request.Request(f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/{path}",  # noqa: S310 - http(s)
                                     headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - the tracking URI is http(s)
            return json.load(response)
    except (OSError, ValueError):
        return None


class DeferredScorer:
    """MLflow's scoring protocol for `invocations`, built from the downloaded model on first need
    (`prepare` starts that in the background once the model is ready)."""

    def __init__(self, local: Path) -> None:
        self._local = local
        self._lock = threading.Lock()
        self._score: Any = None

    def prepare(self) -> None:
        threading.Thread(target=self._built, name="mlflow-scorer", daemon=True).start()

    def __call__(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        return self._built()(body, content_type)

    def _built(self) -> Any:
        with self._lock:
            if self._score is None:
                import mlflow.pyfunc

                from model_wrapper.loading.mlflow_loader import scorer

                self._score = scorer(mlflow.pyfunc.load_model(str(self._local), suppress_warnings=True))
                # Importing MLflow made a few hundred thousand objects that live as long as the process: out
                # of reach of later collections, as the server froze everything loaded before it was ready.
                gc.freeze()
            return self._score


def _plan(mlmodel: Any, files: list[str]) -> dict[str, Any] | None:
    """What to load (model file, format, trusted types, contract, signature), or None for MLflow."""
    if not isinstance(mlmodel, dict) or not isinstance(flavors := mlmodel.get("flavors"), dict):
        return None
    pyfunc, sklearn = flavors.get("python_function"), flavors.get("sklearn")
    if not isinstance(pyfunc, dict) or not isinstance(sklearn, dict) or pyfunc.get("loader_module") != "mlflow.sklearn":
        return None
    external = (mlmodel.get("metadata") or {}).get("mlflow.model.is_external")
    if pyfunc.get("code") or pyfunc.get("model_config") or "data" in pyfunc or external:
        return None
    serialization = sklearn.get("serialization_format", "pickle")
    model_path = pyfunc.get("model_path")
    signature = mlmodel.get("signature") or {}
    contract = next((name for name in (CONTRACT_FILE, f"extra_files/{CONTRACT_FILE}") if name in files), None)
    if serialization not in FORMATS or model_path not in files or signature.get("params") \
            or not isinstance(signature.get("inputs"), str):
        return None
    inputs = json.loads(signature["inputs"])
    if not isinstance(inputs, list) or not all(isinstance(c, dict) and c.get("type") != "tensor" for c in inputs):
        return None
    for column in inputs:  # as MLflow's ColSpec reads (and writes back) a column logged before `required` was
        column.setdefault("required", True)
    example = mlmodel.get("saved_input_example_info")
    if contract is None and example is not None and not (
            isinstance(example, dict) and example.get("type") == "dataframe" and example.get("artifact_path") in files):
        return None
    return {"model_path": model_path, "format": serialization, "trusted": sklearn.get("skops_trusted_types"),
            "contract": contract, "signature": inputs, "flavors": flavors, "example": example,
            "outputs": _outputs(signature)}


def _load(settings: WrapperSettings, local: Path, mlmodel: dict[str, Any],
          plan: dict[str, Any]) -> tuple[LoadedModel, Callable[[], None]] | None:
    signature = plan["signature"]
    if plan["contract"] is None:
        origin = "model signature"
        examples = _example_records(local, plan["example"], signature)
        if examples is False:
            return None
        try:
            contract = contract_from_signature(signature, examples, plan["outputs"])  # type: ignore[arg-type]
        except ContractError as e:
            raise LoadFailure(str(e)) from e
    else:
        origin = f"model's {plan['contract']}"
        try:
            contract = parse_contract((local / plan["contract"]).read_bytes())
        except ContractError as e:
            raise LoadFailure(f"the {origin} is unusable: {e}") from e
    if problems := signature_mismatches(contract, signature):
        raise LoadFailure(f"the {origin} disagrees with the model signature: {'; '.join(problems)}")
    environment = check_environment(local, plan["flavors"], installed=_installed, python=platform.python_version())
    if (reason := environment.fatal(settings.env_mismatch)) is not None:
        raise LoadFailure(reason)
    try:
        estimator = _deserialize(local / plan["model_path"], plan["format"], plan["trusted"])
    except Exception:  # MLflow then loads it, and words its failure
        log.info("model %s version %s: not loaded without MLflow; loading through MLflow", settings.model_name,
                 settings.model_version)
        return None
    columns = column_order(contract, signature, estimator)
    if not array_safe(contract, signature, columns):
        return None
    quiet_feature_name_warning()
    score = DeferredScorer(local)
    backend = SklearnArrayBackend(estimator, columns, np.dtype(array_dtype(contract, signature)), score)
    if environment.mismatches or environment.other:
        log.warning("model %s version %s: its environment differs from this runtime's: %s", settings.model_name,
                    settings.model_version, "; ".join(str(d) for d in environment.mismatches + environment.other))
    log.info("model %s version %s: loaded without MLflow (%s; contract from %s)", settings.model_name,
             settings.model_version, backend.description, origin)
    model = LoadedModel(contract=contract, contract_origin=origin, backend=backend,
                        run_id=settings.model_run_id or mlmodel.get("run_id"), environment=tuple(environment.warnings),
                        files=local, signature=tuple(signature), outputs=tuple(plan["outputs"] or ()))
    return model, score.prepare


def _example_records(local: Path, example: dict[str, Any] | None,
                     signature: list[dict[str, Any]]) -> list[dict[str, Any]] | bool | None:
    """The logged input example as MLflow's loader gives it to the contract (a `split` frame cast to
    the signature's numeric types, as records); None without one; False where only MLflow can say."""
    if example is None:
        return None
    try:
        logged = json.loads((local / example["artifact_path"]).read_text())
        if example.get("params"):
            logged = logged["inputs"]
        columns, data = logged["columns"], logged["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    kinds = {str(column.get("name")): column.get("type") for column in signature}
    if not isinstance(columns, list) or set(columns) != set(kinds) or len(columns) != len(kinds):
        return False
    casts = {"double": float, "long": int, "integer": int}
    records = []
    for row in data if isinstance(data, list) else [None]:
        if not isinstance(row, list) or len(row) != len(columns):
            return False
        record = {}
        for name, value in zip(columns, row, strict=True):
            cast = casts.get(str(kinds[name]))
            if cast is None or isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) \
                    or (cast is int and value != int(value)):
                return False
            record[name] = cast(value)
        records.append(record)
    return records


def _outputs(signature: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The signature's outputs as MLflow writes them in MLmodel (a JSON string), or None."""
    try:
        outputs = json.loads(signature.get("outputs") or "null")
    except ValueError:
        return None
    return outputs if isinstance(outputs, list) and all(isinstance(o, dict) for o in outputs) else None


def _deserialize(path: Path, serialization: str, trusted: list[str] | None) -> Any:
    """As mlflow.sklearn._load_model_from_local_file does."""
    if serialization == "skops":
        prepare_skops_trust()  # skops' default trusted types without importing all of scikit-learn
        import skops.io

        return skops.io.load(path, trusted=trusted)
    with path.open("rb") as file:
        if serialization == "pickle":
            return pickle.load(file)  # noqa: S301 - MLflow's own loader, behind the same gate
        import cloudpickle

        return cloudpickle.load(file)


def _pickles_allowed() -> bool:
    """MLflow's MLFLOW_ALLOW_PICKLE_DESERIALIZATION (default true); when it refuses, MLflow says so."""
    return os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").strip().lower() in ("true", "1")


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's REST client sends from the same variables (a token, or basic auth)."""
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.standard_b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _s3_client(settings: WrapperSettings) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=settings.mlflow_s3_endpoint_url or None)


def _listing(s3: Any, location: str) -> list[str]:
    """Every file under the model's folder, relative to it."""
    bucket, prefix = _split(location)
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
        return [item["Key"][len(prefix) + 1:] for page in pages for item in page.get("Contents", [])]
    except Exception as e:
        raise fetch_failure(f"could not download the model from {location}: {_first_line(e)}", e) from e


def _fetch(s3: Any, location: str, files: list[str], names: list[str], local: Path) -> None:
    """The named files, a few at a time: each is one GET, mostly waiting on S3."""
    bucket, prefix = _split(location)
    targets = []
    for name in names:
        target = local / name
        if not target.resolve().is_relative_to(local.resolve()):
            raise LoadFailure(f"the model's files at {location} name a path outside the model: {name}")
        targets.append((f"{prefix}/{name}", target))
    with ThreadPoolExecutor(max_workers=FETCHES, thread_name_prefix="model-fetch") as pool:
        for failure in pool.map(lambda item: _get(s3, bucket, *item), targets):
            if failure is not None:
                raise fetch_failure(f"could not download the model from {location}: {_first_line(failure)}",
                                    failure) from failure


def _get(s3: Any, bucket: str, key: str, target: Path) -> Exception | None:
    """One object to a file by a plain GET, streamed; `download_file`'s transfer manager (a HEAD,
    then its own threads) costs more than the transfer for a model's few small files."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with target.open("wb") as file:
            for chunk in body.iter_chunks(CHUNK_BYTES):
                file.write(chunk)
    except Exception as e:
        return e
    return None


def _split(location: str) -> tuple[str, str]:
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return bucket, prefix.rstrip("/")


def _installed(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]
