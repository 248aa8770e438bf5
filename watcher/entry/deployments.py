"""The `mlflow deployments` target `service-builder`: MLflow's plugin interface over the watcher's pass.

Found by MLflow through the `mlflow.deployments` entry point (pyproject.toml); used by `mlflow
deployments ... -t service-builder` and `get_deploy_client("service-builder")`. It orchestrates
nothing of its own: `create` selects the version the way SELECTOR says and runs the pass for that
model (`run-once --model`) until the version is deployed or failed; `delete` is `undeploy --untag`;
`get` and `list` are `status --json`. The one module above the clients that imports mlflow, because
the interface it implements is MLflow's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from typing import Any

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

from model_wrapper.contract.naming import model_slug
from watcher.clients.endpoint import invoke
from watcher.config.logs import configure_logging
from watcher.config.settings import Settings
from watcher.decide.types import ATTEMPT, STATUS, VersionInfo
from watcher.entry import commands
from watcher.entry.cli import build_deps, prepared_settings
from watcher.errors import ServiceBuilderError
from watcher.reconcile.deps import Deps

log = logging.getLogger(__name__)
FLAVOR = "python_function"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.\-]+))$")
# `-C key=value`: these, or any watcher setting by its variable's name in lower case (selector, k8s_name_space...).
OWN_KEYS = {"target": "DEPLOY_TARGET for this call (kubernetes or local)",
            "timeout": "seconds create/update wait for deployed or failed (default 900)",
            "port": "run-local only: the port to serve on (default 8080)"}
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def target_help() -> str:
    return (f"service-builder deploys registered MLflow model versions as the watcher does (tags, Kubernetes or "
            f"local target). NAME is the registered model; MODEL_URI is models:/NAME/VERSION or models:/NAME@ALIAS. "
            f"Configured by the watcher's environment (MLFLOW_TRACKING_URI, DEPLOY_TARGET, K8S_*, SELECTOR...) and "
            f"per call by -C key=value: {'; '.join(f'{k}: {v}' for k, v in OWN_KEYS.items())}; or any setting by "
            "its variable's name in lower case (e.g. -C selector=alias:production).")


def run_local(name: str, model_uri: str, flavor: str | None = None, config: dict[str, Any] | None = None) -> None:
    """Serve the version with the model wrapper on this machine, in the foreground, until interrupted (MLflow
    calls this module-level function without a target: `mlflow.deployments.cli.run_local`)."""
    client = ServiceBuilderDeploymentClient("service-builder")
    call = client._call(config, allow_port=True)
    version = _resolve(call.deps, name, model_uri)
    env = {**os.environ, "MODEL_NAME": version.name, "MODEL_VERSION": str(version.version),
           "MODEL_SOURCE": call.deps.registry.artifact_uri(version), "MODEL_RUN_ID": version.run_id or "",
           "PORT": str(call.port)}
    log.info("%s: serving at http://127.0.0.1:%s/%s/api/", version, call.port, model_slug(version.name))
    subprocess.run([sys.executable, "-m", "model_wrapper"], env=env, check=False)


class _Call:
    """One call's collaborators and its own options."""

    def __init__(self, deps: Deps, timeout: float, port: int) -> None:
        self.deps, self.timeout, self.port = deps, timeout, port


class ServiceBuilderDeploymentClient(BaseDeploymentClient):
    """`create`, `update`, `delete`, `list`, `get` and `predict` on the watcher's code path."""

    def create_deployment(self, name: str, model_uri: str, flavor: str | None = None,
                          config: dict[str, Any] | None = None, endpoint: str | None = None) -> dict[str, Any]:
        """Select the version (tag, alias or stage, per SELECTOR) and reconcile the model until it is
        deployed (its facts) or failed (an MlflowException with its deployment_message)."""
        if flavor not in (None, FLAVOR):
            raise MlflowException(f"flavor {flavor!r} is not served; service-builder serves {FLAVOR} models")
        call = self._call(config)
        version = _resolve(call.deps, name, model_uri)
        _select(call.deps, version)
        info = _until_settled(call, version)
        facts = {**self._facts(call.deps, info), "model_uri": model_uri}
        log.info("%s: deployed at %s", version, facts["endpoint"])
        return facts

    def update_deployment(self, name: str, model_uri: str | None = None, flavor: str | None = None,
                          config: dict[str, Any] | None = None, endpoint: str | None = None) -> dict[str, Any]:
        """Move the selection to another version (the others of the model lose it), as create does."""
        if model_uri is None:
            raise MlflowException("update needs --model-uri: the version to move the deployment to")
        return self.create_deployment(name, model_uri, flavor, config, endpoint)

    def delete_deployment(self, name: str, config: dict[str, Any] | None = None, endpoint: str | None = None) -> None:
        """`undeploy --untag`: remove the model's objects and what selects its versions."""
        call = self._call(config)
        said: list[str] = []
        if _guarded(lambda: commands.undeploy(call.deps, name, untag=True, out=said.append)) != 0:
            raise MlflowException("; ".join(said) or f"{name}: not undeployed")
        log.info("%s", "; ".join(said))

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Each model's deployment: the running version, else its highest selected one (`status --json`)."""
        deps = self._call(None).deps
        rows: dict[str, dict[str, Any]] = {}
        for row in _guarded(lambda: commands.version_states(deps)):
            kept = rows.get(row["model"])
            if kept is None or (row["running"], row["version"]) > (kept["running"], kept["version"]):
                rows[row["model"]] = row
        return [self._row_facts(deps, row) for row in rows.values()]

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        for facts in self.list_deployments():
            if facts["name"] == name:
                return facts
        raise MlflowException(f"no deployment named {name!r}: no version of it is selected or running",
                              error_code=RESOURCE_DOES_NOT_EXIST)

    def predict(self, deployment_name: str | None = None, inputs: Any = None,
                endpoint: str | None = None) -> PredictionsResponse:
        """Send `inputs` (a DataFrame, or a body `invocations` accepts) to the deployed endpoint."""
        facts = self.get_deployment(str(deployment_name))
        if not facts["endpoint"]:
            raise MlflowException(f"{deployment_name} has no endpoint (status {facts['status']})")
        status, text = _guarded(lambda: invoke(facts["endpoint"], _body(inputs).encode()))
        if status != 200:
            raise MlflowException(f"{deployment_name}: the endpoint answered {status}: {text[:2000]}")
        return PredictionsResponse.from_json(text)

    def explain(self, deployment_name: str | None = None, df: Any = None, endpoint: str | None = None) -> Any:
        raise _unsupported("explain")

    def create_endpoint(self, name: str, config: dict[str, Any] | None = None) -> Any:
        raise _unsupported("endpoints")

    def update_endpoint(self, endpoint: str, config: dict[str, Any] | None = None) -> Any:
        raise _unsupported("endpoints")

    def delete_endpoint(self, endpoint: str) -> Any:
        raise _unsupported("endpoints")

    def list_endpoints(self) -> Any:
        raise _unsupported("endpoints")

    def get_endpoint(self, endpoint: str) -> Any:
        raise _unsupported("endpoints")

    def _call(self, config: dict[str, Any] | None, *, allow_port: bool = False) -> _Call:
        own, settings = _config(config or {}, allow_port=allow_port)
        return _Call(build_deps(settings), float(own.get("timeout", 900)), int(own.get("port", 8080)))

    def _facts(self, deps: Deps, info: VersionInfo) -> dict[str, Any]:
        rows = [r for r in commands.version_states(deps) if (r["model"], r["version"]) == (info.name, info.version)]
        return self._row_facts(deps, rows[0] if rows else {"model": info.name, "version": info.version,
                                                           "status": info.tags.get(STATUS, ""), "running": False,
                                                           "endpoint": info.tags.get("model_endpoint", ""),
                                                           "message": info.tags.get("deployment_message", ""),
                                                           "warnings": ""})

    def _row_facts(self, deps: Deps, row: dict[str, Any]) -> dict[str, Any]:
        info = deps.registry.get(row["model"], row["version"])
        return {"name": row["model"], "flavor": FLAVOR, **row, "tags": dict(info.tags) if info else {}}


def _config(config: dict[str, Any], *, allow_port: bool) -> tuple[dict[str, str], Settings]:
    """The call's own options and the settings (environment plus the -C overrides); a bad key is named."""
    known = set(Settings.model_fields)
    own = {k: str(v) for k, v in config.items() if k in OWN_KEYS}
    if unknown := sorted(k for k in config if k not in OWN_KEYS and k not in known) + (
            ["port"] if "port" in config and not allow_port else []):
        raise MlflowException(f"unknown config key {unknown[0]!r} (-C {unknown[0]}=...); use "
                              f"{', '.join(k for k in OWN_KEYS if allow_port or k != 'port')}, or a watcher setting "
                              "by its variable's name in lower case, e.g. selector or k8s_name_space",
                              error_code=INVALID_PARAMETER_VALUE)
    for key, kind in (("timeout", float), ("port", int)):
        if key in own:
            try:
                kind(own[key])
            except ValueError:
                raise MlflowException(f"config key {key!r}: {own[key]!r} is not a number",
                                      error_code=INVALID_PARAMETER_VALUE) from None
    overrides: dict[str, object] = {k: v for k, v in config.items() if k in known}
    if "target" in own:
        overrides["deploy_target"] = own["target"]
    try:
        settings = prepared_settings(**overrides)
    except ServiceBuilderError as e:
        raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
    if not logging.getLogger().handlers:  # MLflow's CLI: the pass's lines and the endpoint go to stderr
        configure_logging(settings.log_format)
    return own, settings


def _resolve(deps: Deps, name: str, model_uri: str) -> VersionInfo:
    """The registry version `models:/NAME/VERSION` or `models:/NAME@ALIAS` names (NAME is the deployment's)."""
    match = MODEL_URI.match(model_uri or "")
    if match is None or match["name"] != name:
        raise MlflowException(f"model URI {model_uri!r}: use models:/{name}/VERSION or models:/{name}@ALIAS "
                              "(the deployment is named after the registered model)",
                              error_code=INVALID_PARAMETER_VALUE)
    found = _guarded(lambda: deps.registry.by_alias(name, match["alias"]) if match["alias"]
                     else deps.registry.get(name, int(match["version"])))
    if found is None:
        raise MlflowException(f"{model_uri} does not exist in the registry", error_code=RESOURCE_DOES_NOT_EXIST)
    return found


def _select(deps: Deps, version: VersionInfo) -> None:
    """SELECTOR picks this version and no other of the model; a remembered failure of it is forgotten (`retry`)."""
    selector = deps.settings.parsed_selector
    for other in _guarded(lambda: deps.registry.selected(selector, name=version.name)):
        if other.name == version.name and other.version != version.version:
            _guarded(lambda o=other: deps.registry.unselect(o, selector))
    _guarded(lambda: deps.registry.select(version, selector))
    _guarded(lambda: deps.registry.delete_tag(version, ATTEMPT))


def _until_settled(call: _Call, version: VersionInfo) -> VersionInfo:
    """Run the model's pass until the version is deployed (returned) or failed (raised), within the timeout."""
    deadline = time.monotonic() + call.timeout
    while True:
        _guarded(lambda: commands.reconcile(call.deps, only_model=version.name, out=log.info))
        info = _guarded(lambda: call.deps.registry.get(version.name, version.version)) or version
        status = info.tags.get(STATUS, "")
        if status == "deployed":
            return info
        if status == "failed":
            raise MlflowException(info.tags.get("deployment_message") or f"{version}: failed")
        if time.monotonic() > deadline:
            raise MlflowException(f"{version}: still {status or 'pending'} after {call.timeout:g} s (-C timeout=...)")
        time.sleep(2)


def _body(inputs: Any) -> str:
    """The JSON `invocations` takes: a dict or list as it is; a DataFrame that `mlflow deployments predict
    --input-path` read with `pd.read_json` from a body file, unwrapped; any other DataFrame as dataframe_split."""
    import pandas as pd
    from mlflow.utils.proto_json_utils import dump_input_data

    if isinstance(inputs, dict | list):
        return json.dumps(inputs)
    if isinstance(inputs, pd.DataFrame) and len(inputs.columns) and set(inputs.columns) <= {*FORMATS, "params"} \
            and any(c in FORMATS for c in inputs.columns):
        return json.dumps({str(column): _unwrapped(inputs[column]) for column in inputs.columns})
    return str(dump_input_data(inputs))


def _unwrapped(column: Any) -> Any:
    """One top-level key of the file as pandas read it: a list (records) or an object (split, params)."""
    import pandas as pd

    present = {key: value for key, value in column.items()
               if not (isinstance(value, float) and math.isnan(value))}
    if isinstance(column.index, pd.RangeIndex):
        return list(present.values())
    return present


def _guarded(call: Any) -> Any:
    """The watcher's errors as MlflowException, which MLflow's CLI shows as a message, not a trace."""
    try:
        return call()
    except ServiceBuilderError as e:
        raise MlflowException(str(e)) from e


def _unsupported(what: str) -> MlflowException:
    return MlflowException(f"{what} is not supported by the service-builder target: it deploys registered "
                           "model versions (create, update, delete, list, get, predict)",
                           error_code=INVALID_PARAMETER_VALUE)
