"""The MLflow model registry as the watcher sees it: find selected versions, resolve artifacts, write tags.

The only watcher module that imports mlflow. Its errors leave as the watcher's own
(`watcher.errors`), with the registry's message but never a credential.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.entities.webhook import WebhookEvent, WebhookEventStr
from mlflow.exceptions import MlflowException, RestException
from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

from watcher.config.logs import redact
from watcher.decide.selection import names_loosely, near_miss
from watcher.decide.types import NearMiss, Selector, VersionInfo
from watcher.errors import PassAborted, Permanent, Retryable, ServiceBuilderError, VersionGone

log = logging.getLogger(__name__)
REGISTERED_MODEL_PAGE = 1000  # the server's maximum for search_registered_models


def name_equals(name: str) -> str | None:
    """The search filter's clause for this model's name, or None for a name no filter can hold.

    MLflow registers any name without '/' or ':', quotes included, but its filters do not escape quotes: a
    text is in single or double quotes and ends at the next of its kind (against MLflow 3's server,
    `name = 'O''Brien'` matches nothing). So a name with a single quote goes in double quotes; one with both
    kinds cannot be written, and the caller filters by name itself. Backslashes and backticks are plain.
    """
    if "'" not in name:
        return f"name = '{name}'"
    if '"' not in name:
        return f'name = "{name}"'
    return None


class Registry:
    """MLflow registry calls, each translated into the watcher's error tree."""

    def __init__(self, tracking_uri: str, page_size: int = 1000, client: MlflowClient | None = None) -> None:
        self._client = client or MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._page_size = page_size

    def selected(self, selector: Selector, name: str | None = None) -> list[VersionInfo]:
        """Every READY version the selector picks (of model `name` only, when given)."""
        return self.find(selector, name)[0]

    def find(self, selector: Selector, name: str | None = None) -> tuple[list[VersionInfo], list[NearMiss]]:
        """The READY versions the selector picks, and those it nearly picks (watcher.decide.selection), from one
        server-side, paged search: a tag's value ILIKE '%VALUE%' (case and spaces; the key's case is the server
        collation's to decide), or, for one model (a webhook's), that model's versions, key case included."""
        with _translated("search the registry", abort=True):
            if selector.kind == "tag":
                query = f"tags.`{selector.key}` ILIKE '%{selector.value.strip()}%'"
                if name is not None and (named := name_equals(name)) is not None:
                    query = named  # a webhook pass reads only its model's versions
                found = [_info(v) for v in self._versions(query) if v.status == "READY"]
                return _classified(selector, [v for v in found if name is None or v.name == name])
            if selector.kind == "alias":
                return self._aliased(selector)
            return [_info(v) for model in self._models() for v in model.latest_versions or []
                    if (v.current_stage or "").lower() == selector.key.lower() and v.status == "READY"], []

    def has_model(self, name: str) -> bool:
        """Whether a registered model of this name exists."""
        try:
            with _translated(f"read the model {name}"):
                self._client.get_registered_model(name)
                return True
        except VersionGone:
            return False

    def get(self, name: str, version: int) -> VersionInfo | None:
        """One version, or None when it (or its model) does not exist."""
        try:
            with _translated(f"read {name} v{version}"):
                return _info(self._client.get_model_version(name, str(version)))
        except VersionGone:
            return None

    def set_tags(self, version: VersionInfo, tags: Mapping[str, str], *, last: str | None = None) -> None:
        """Write `tags` on the version, the `last` key only after all the others have landed.

        MLflow takes one call per tag, so the others go concurrently. A vanished version is not an
        error (there is nothing left to tell).
        """
        try:
            self._write_concurrently(version, {k: v for k, v in tags.items() if k != last})
            if last is not None and last in tags:
                self._write_concurrently(version, {last: tags[last]})
        except VersionGone:
            log.info("%s: no longer exists, tags not written", version)

    def with_status(self, name: str, status: str) -> list[VersionInfo]:
        """The versions of model `name` whose deployment_status is `status` (filtered on the server, by name too
        where a filter can hold it: `name_equals`)."""
        with _translated(f"search the versions of {name}"):
            named = name_equals(name)
            query = f"tags.deployment_status = '{status}'"
            found = self._versions(query if named is None else f"{named} AND {query}")
            return [_info(v) for v in found if v.name == name]

    def select(self, version: VersionInfo, selector: Selector) -> None:
        """Make `selector` pick the version: set its tag, point the alias at it, or move it to the stage."""
        with _translated(f"set {selector} on {version}"):
            if selector.kind == "tag":
                self._client.set_model_version_tag(version.name, str(version.version), selector.key, selector.value)
            elif selector.kind == "alias":
                self._client.set_registered_model_alias(version.name, selector.key, str(version.version))
            else:
                self._client.transition_model_version_stage(version.name, str(version.version), selector.key)

    def by_alias(self, name: str, alias: str) -> VersionInfo | None:
        """The version the model's alias points at, or None."""
        try:
            with _translated(f"read the alias {alias!r} of {name}"):
                return _info(self._client.get_model_version_by_alias(name, alias))
        except VersionGone:
            return None

    def unselect(self, version: VersionInfo, selector: Selector) -> None:
        """Remove what makes `selector` pick the version: its tag, its alias, or its stage (back to None)."""
        with _translated(f"remove {selector} from {version}"):
            if selector.kind == "tag":
                self._client.delete_model_version_tag(version.name, str(version.version), selector.key)
            elif selector.kind == "alias":
                self._client.delete_registered_model_alias(version.name, selector.key)
            else:
                self._client.transition_model_version_stage(version.name, str(version.version), "None")

    def delete_tag(self, version: VersionInfo, key: str) -> None:
        """Remove one tag (gone already, or the version gone, is what was wanted)."""
        try:
            with _translated(f"remove the tag {key!r} of {version}"):
                self._client.delete_model_version_tag(version.name, str(version.version), key)
        except VersionGone:
            pass
        if isinstance(version.tags, dict):
            version.tags.pop(key, None)

    def _write_concurrently(self, version: VersionInfo, tags: Mapping[str, str]) -> None:
        def write(key: str, value: str) -> None:
            with _translated(f"tag {version}"):
                self._client.set_model_version_tag(version.name, str(version.version), key, value)

        if not tags:
            return
        with ThreadPoolExecutor(max_workers=min(len(tags), 8)) as pool:
            for future in [pool.submit(write, key, value) for key, value in tags.items()]:
                future.result()

    def artifact_uri(self, version: VersionInfo) -> str:
        """Where the version's model files are (for MLflow 3 `models:/m-…` sources, the logged model's)."""
        with _translated(f"locate the artifacts of {version}"):
            uri = str(self._client.get_model_version_download_uri(version.name, str(version.version)))
            # The registry hands back a `runs:/` source (an MLflow 2 style registration) unresolved.
            return self._run_model_location(uri) if RunsArtifactRepository.is_runs_uri(uri) else uri

    def _run_model_location(self, uri: str) -> str:
        """`runs:/<run>/<name>[/<path>]` as a storage location, as MLflow's own runs repository reads it:
        the logged model called <name> that the run produced (MLflow 3), else the run's artifacts."""
        run_id, path = RunsArtifactRepository.parse_runs_uri(uri)
        name, _, rest = (path or "").partition("/")
        run = self._client.get_run(run_id)
        for output in run.outputs.model_outputs if run.outputs else []:
            model = self._client.get_logged_model(output.model_id)
            if model.name == name and model.artifact_location:
                return f"{model.artifact_location.rstrip('/')}/{rest}".rstrip("/")
        return f"{run.info.artifact_uri.rstrip('/')}/{path or ''}".rstrip("/")

    def log_evaluation(self, version: VersionInfo, metrics: Mapping[str, float], timestamp_ms: int) -> None:
        """The gate's figures as metrics of the version's logged model (on its source run), or of its run
        for versions registered MLflow-2 style, where the MLflow UI shows them."""
        self._log_metrics(version, "evaluation", metrics, timestamp_ms, 0)

    def log_rollout(self, version: VersionInfo, metrics: Mapping[str, float], timestamp_ms: int, step: int) -> None:
        """A rollout's figures as metrics `rollout_<name>` beside the evaluation's, one step per rollout step."""
        self._log_metrics(version, "rollout", metrics, timestamp_ms, step)

    def _log_metrics(self, version: VersionInfo, what: str, metrics: Mapping[str, float], timestamp_ms: int,
                     step: int) -> None:
        with _translated(f"log the {what} of {version}"):
            run_id = self._run_of(version)
            if run_id is None:
                log.info("%s: no run or logged model to log the %s on; only tags record it", version, what)
                return
            self._client.log_batch(run_id, metrics=[
                Metric(f"{what}_{name}", value, timestamp_ms, step, model_id=version.model_id)
                for name, value in sorted(metrics.items())])

    def log_drift(self, version: VersionInfo, metrics: Mapping[str, float], timestamp_ms: int, report: str) -> None:
        """Drift figures as metrics beside the evaluation's, and the HTML report as an artifact of the same run
        (`drift/version-<n>/drift_report.html`, replaced by each measurement)."""
        with _translated(f"log the drift of {version}"):
            run_id = self._run_of(version)
            if run_id is None:
                log.info("%s: no run or logged model to log the drift on; only tags record it", version)
                return
            self._client.log_batch(run_id, metrics=[
                Metric(name, value, timestamp_ms, 0, model_id=version.model_id)
                for name, value in sorted(metrics.items())])
            self._client.log_text(run_id, report, f"drift/version-{version.version}/drift_report.html")

    def _run_of(self, version: VersionInfo) -> str | None:
        """The version's run, or its logged model's source run (MLflow 3)."""
        if version.run_id is None and version.model_id:
            return self._client.get_logged_model(version.model_id).source_run_id
        return version.run_id

    def run_artifact_uri(self, run_id: str) -> str:
        with _translated(f"locate the artifacts of run {run_id}"):
            return str(self._client.get_run(run_id).info.artifact_uri)

    def ensure_webhook(self, name: str, url: str, events: Sequence[str], secret: str, description: str) -> bool:
        """Create the webhook called `name`, or point it at `url` with these events and secret; True if created."""
        wanted: list[WebhookEvent | WebhookEventStr] = [WebhookEvent(*event.split(".", 1)) for event in events]
        with _translated(f"register the webhook {name!r}"):
            existing = next((hook for hook in self._webhooks() if hook.name == name), None)
            if existing is None:
                self._client.create_webhook(name, url, wanted, description=description, secret=secret)
                return True
            self._client.update_webhook(existing.webhook_id, url=url, events=wanted, description=description,
                                        secret=secret, status="ACTIVE")
            return False

    def _webhooks(self) -> Iterator[Any]:
        token = None
        while True:
            page = self._client.list_webhooks(max_results=100, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _versions(self, query: str) -> Iterator[ModelVersion]:
        token = None
        while True:
            page = self._client.search_model_versions(query, max_results=self._page_size, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _models(self) -> Iterator[Any]:
        token = None
        while True:
            page = self._client.search_registered_models(max_results=REGISTERED_MODEL_PAGE, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _aliased(self, selector: Selector) -> tuple[list[VersionInfo], list[NearMiss]]:
        # Aliases cannot be filtered on the server; registered models are paged (1000 a call)
        # and only the aliased versions are read, never every version.
        picked: list[VersionInfo] = []
        near: list[NearMiss] = []
        for model in self._models():
            aliases = model.aliases or {}
            if (number := aliases.get(selector.key)) is not None:
                picked.extend(self._ready(model.name, number))
            elif (alias := next((a for a in sorted(aliases) if names_loosely(selector, a)), None)) is not None:
                near.extend(NearMiss(v, f"the alias {alias!r}") for v in self._ready(model.name, aliases[alias]))
        return picked, near

    def _ready(self, name: str, number: Any) -> list[VersionInfo]:
        version = self._client.get_model_version(name, str(number))
        return [_info(version)] if version.status == "READY" else []


def _classified(selector: Selector, found: list[VersionInfo]) -> tuple[list[VersionInfo], list[NearMiss]]:
    """What a tag search found, split: the versions the selector picks exactly, and its near misses."""
    picked = [v for v in found if v.tags.get(selector.key) == selector.value]
    near = [NearMiss(v, miss) for v in found if (miss := near_miss(selector, v.tags)) is not None]
    return picked, near


def _info(version: ModelVersion) -> VersionInfo:
    return VersionInfo(name=version.name, version=int(version.version), source=version.source or "",
                       run_id=version.run_id or None, tags=dict(version.tags or {}),
                       model_id=getattr(version, "model_id", None) or _logged_model_id(version.source or ""))


def _logged_model_id(source: str) -> str | None:
    """`models:/m-…` names the logged model itself (the registry's answers may leave model_id out)."""
    rest = source.removeprefix("models:/") if source.startswith("models:/") else ""
    return rest if rest and "/" not in rest else None


class _translated:
    """Context manager: MLflow/requests errors in, the watcher's errors out."""

    def __init__(self, doing: str, *, abort: bool = False) -> None:
        self._doing = doing
        self._abort = abort

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        if error is None or isinstance(error, ServiceBuilderError) or not isinstance(error, Exception):
            return
        raise _translate(error, self._doing, self._abort) from error


def _translate(error: Exception, doing: str, abort: bool) -> ServiceBuilderError:
    if (refused := _cause(error, _NO_ANSWER)) is not None:
        # No answer at all: the registry is gone for every model, so the pass stops here rather
        # than tagging nothing and failing each remaining model in turn.
        return PassAborted(f"MLflow registry unreachable: could not {doing}: {redact(refused)}")
    message = f"could not {doing}: {redact(_cause(error, (requests.RequestException,)) or _short(error))}"
    if isinstance(error, RestException) and error.error_code == "RESOURCE_DOES_NOT_EXIST":
        return VersionGone(message)
    status = error.get_http_status_code() if isinstance(error, MlflowException) else None
    unreachable = isinstance(error, requests.RequestException | OSError) or (
        isinstance(error, MlflowException) and not isinstance(error, RestException))
    if abort and (unreachable or (status or 0) >= 500):
        return PassAborted(f"MLflow registry unreachable: {message}")
    if unreachable or (status or 0) >= 500 or status == 429:
        return Retryable(message)
    return Permanent(message)


_NO_ANSWER = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)


def _cause(error: BaseException, kinds: tuple[type[BaseException], ...]) -> str | None:
    """The short reason of the first of `kinds` behind `error` (e.g. connection refused, too many 503s).

    MLflow re-raises transport errors as a plain MlflowException with a long message; the requests
    error is its context, and urllib3's reason inside says what actually happened.
    """
    cause: BaseException | None = error
    for _ in range(10):
        if cause is None:
            return None
        if isinstance(cause, kinds):
            reason = getattr(cause.args[0] if cause.args else cause, "reason", None) or cause
            return (str(reason).splitlines() or [type(cause).__name__])[0][:300]
        cause = cause.__cause__ or cause.__context__
    return None


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:300]

