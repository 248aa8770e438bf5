"""The app factory: thin endpoints under `/<slug>/api/` over a transport-free `Predictor`.

`create_app(settings, predictor)` is called by `model_wrapper.server` (and by tests). Each endpoint
reads the request, calls the predictor, and returns bytes; errors are `WrapperError`s rendered by
one handler in one JSON shape (MLflow's shape on MLflow's scoring routes). MLflow's scoring-server
routes are also served at the pod root, so `ScoringServerClient(host, port)` works against a pod, and
`/ping` and `/version` under the prefix too, so it works through the Ingress at `<host>:<port>/<slug>/api`.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Route

from model_wrapper.config.settings import WrapperSettings
from model_wrapper.errors import (
    ErrorResponse,
    NotReady,
    WrapperError,
    for_status,
    mlflow_body,
    unexpected,
    v2_body,
)
from model_wrapper.http.guards import Guards
from model_wrapper.http.metrics import Metrics, MetricsMiddleware
from model_wrapper.http.openapi import build_openapi
from model_wrapper.http.predict_endpoint import PredictEndpoint
from model_wrapper.http.shadow import Fixed, ShadowConfig, ShadowCounters, ShadowMirror, ShadowSource
from model_wrapper.http.swagger import ASSETS, swagger_page
from model_wrapper.http.v2_routes import add_v2_routes, v2_bases
from model_wrapper.predict.inference_log import InferenceLog
from model_wrapper.predict.predictor import Predictor

log = logging.getLogger(__name__)
JSON = "application/json"
PROTECTED = {"predict", "invocations", "metadata"}
ERROR_TEXTS = {400: "Malformed JSON", 401: "Missing or wrong API key (when keys are configured)",
               413: "Body or batch over the limit", 422: "Invalid input; `details` name each field",
               500: "The model failed (not the request)", 503: "The model is not ready yet"}
# MLflow's scoring-server routes (mlflow/pyfunc/scoring_server/__init__.py `init`), at the pod root.
ROOT_ROUTES = ("/invocations", "/ping", "/health", "/version")
# The same probes under the prefix (`health` there is the wrapper's own liveness, kept as it was).
PREFIX_PROBES = ("ping", "version")
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in ERROR_TEXTS.items()}


def create_app(settings: WrapperSettings, predictor: Predictor, inference_log: InferenceLog | None = None) -> Any:
    """The ASGI application serving `predictor` under `settings.prefix`; predict and V2 infer requests
    are sampled into `inference_log` when there is one."""
    prefix = settings.prefix
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title=settings.model_name,
                  version=settings.model_version)
    predict = PredictEndpoint(predictor, inference_log)
    _routes(app, prefix, predictor, predict, secured=bool(settings.key_list()))
    _scoring_probes(app, predictor, "/", ("ping", "health", "version"))
    _scoring_probes(app, predictor, prefix, PREFIX_PROBES)
    app.add_api_route("/invocations", Invocations(predictor), methods=["POST"], include_in_schema=False)
    add_v2_routes(app, predictor, prefix=prefix, slug=prefix.strip("/").removesuffix("/api"),
                  inference_log=inference_log)
    app.mount(f"{prefix}assets", StaticFiles(directory=str(ASSETS)), name="assets")
    metrics = Metrics(settings.model_name, settings.model_version)
    if inference_log is not None:
        inference_log.counters = metrics
    app.add_api_route("/metrics", lambda: Response(metrics.render(), media_type="text/plain; version=0.0.4"),
                      methods=["GET"], include_in_schema=False)
    mlflow_paths = {*ROOT_ROUTES, *(f"{prefix}{name}" for name in ("invocations", *PREFIX_PROBES))}
    v2_paths = v2_bases(prefix)
    _handlers(app, mlflow_paths=mlflow_paths, v2_paths=v2_paths)
    endpoints = {f"{prefix}{name}": name for name in
                 ("predict", "invocations", "health", "ready", "metadata", "openapi.json", *PREFIX_PROBES)}
    endpoints |= {prefix: "docs", "/metrics": "metrics"}
    endpoints |= {path: f"root{path.replace('/', '_')}" for path in ROOT_ROUTES}
    hot = HotPath(app, path=f"{prefix}predict", endpoint=predict)
    guarded = Guards(hot, keys=settings.key_list(),
                     protected={f"{prefix}{name}" for name in PROTECTED} | {"/invocations"},
                     max_body_bytes=settings.max_body_bytes, mlflow_paths=mlflow_paths, v2_paths=v2_paths)
    mirrored = ShadowMirror(guarded, source=_mirror_source(settings),
                            counters=ShadowCounters(metrics.registry, settings.model_name, settings.model_version))
    return MetricsMiddleware(mirrored, metrics=metrics, endpoints=endpoints, prefix=prefix)


class HotPath:
    """`POST <prefix>predict` straight to its endpoint; every other request to the FastAPI app.

    The guards, the shadow's mirror and the metrics wrap both (in that order, innermost first, as they
    would as the app's middleware). What the endpoint is spared is FastAPI's own stack, seven layers at
    every request (its error, telemetry and body-limit middleware, Starlette's exception middleware and
    exit stack, the router's match over every route): a fifth of a one-row predict's time. The endpoint
    answers its own errors (`PredictEndpoint`)."""

    def __init__(self, app: Any, *, path: str, endpoint: PredictEndpoint) -> None:
        self.app, self.path, self.endpoint = app, path, endpoint

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == "POST":
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _mirror_source(settings: WrapperSettings) -> Fixed | ShadowSource:
    """A canary candidate asks the live version (its environment says so); any other wrapper mirrors to a shadow
    while the ConfigMap it mounts says so."""
    if settings.mirror_to_live is None:
        return ShadowSource(settings.shadow_config)
    return Fixed(ShadowConfig(settings.mirror_to_live.rstrip("/"), settings.model_version, settings.mirror_sample,
                              asks_live=True))


def _routes(app: FastAPI, prefix: str, predictor: Predictor, predict: PredictEndpoint, *, secured: bool) -> None:
    document: dict[str, Any] = {}

    # The hot path is a plain ASGI endpoint (predict_endpoint.py), reached before FastAPI's stack (`HotPath`);
    # the route stays for the documentation (openapi.py documents it from the contract) and other methods' 405.
    app.router.routes.append(Route(f"{prefix}predict", predict, methods=["POST"], name="predict"))

    app.add_api_route(f"{prefix}invocations", Invocations(predictor), methods=["POST"], operation_id="invocations",
                      summary="MLflow scoring protocol", description=Invocations.__doc__,
                      responses={**ERRORS, 200: {"description": "As `mlflow models serve` answers"}})

    @app.get(f"{prefix}health", operation_id="health", summary="Liveness")
    async def health() -> Response:
        """200 while the process serves HTTP, also while the model is still loading."""
        return Response(b'{"status":"alive"}', media_type=JSON)

    @app.get(f"{prefix}ready", operation_id="ready", summary="Readiness", responses={503: ERRORS[503]})
    async def ready() -> Response:
        """200 once the model is loaded and the contract's examples were predicted; 503 with the reason before."""
        if not predictor.ready:
            raise NotReady(predictor.reason)
        if predictor.draining:
            raise NotReady("the wrapper is shutting down; requests still in flight are answered")
        differences = predictor.model.environment if predictor.model else ()
        # The watcher copies `warnings` into the version's deployment_warnings tag (ready needs no API key).
        return Response(orjson.dumps({"status": "ready", "warnings": list(differences)}) if differences
                        else b'{"status":"ready"}', media_type=JSON)

    @app.get(f"{prefix}metadata", operation_id="metadata", summary="Model metadata",
             responses={401: ERRORS[401], 503: ERRORS[503]})
    async def metadata() -> dict[str, Any]:
        """Name, version, run id, how the model is served, and the contract."""
        return predictor.metadata()

    @app.get(f"{prefix}openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        if not document:
            document.update(build_openapi(app.routes, predictor, prefix=prefix, errors=ERROR_TEXTS,
                                          protected=PROTECTED, secured=secured))
        return Response(orjson.dumps(document), media_type=JSON)

    @app.get(prefix, include_in_schema=False)
    async def docs() -> HTMLResponse:
        contract = predictor.installed().contract if predictor.model else None
        title = (contract.title if contract and contract.title else None) or predictor.name
        return HTMLResponse(swagger_page(title=title, openapi_url=f"{prefix}openapi.json",
                                         assets=f"{prefix}assets"))


def _scoring_probes(app: FastAPI, predictor: Predictor, base: str, names: tuple[str, ...]) -> None:
    """`ping` (and `health`, its alias) and `version` under `base`, as `mlflow models serve` answers them."""
    mlflow_version = importlib.metadata.version("mlflow")

    async def ping() -> Response:
        # MLflow's server listens only once its model is loaded; this one answers 503 until ready.
        if not predictor.ready:
            raise NotReady(predictor.reason)
        return Response(b"\n", media_type=JSON)

    handlers = {"ping": ping, "health": ping,
                "version": lambda: Response(mlflow_version, media_type=JSON)}
    for name in names:
        app.add_api_route(f"{base}{name}", handlers[name], methods=["GET"], include_in_schema=False)


class Invocations:
    """The MLflow scoring-server protocol (`dataframe_split`, `dataframe_records`, `instances`,
    `inputs`, CSV, Parquet, `params`), answered exactly as `mlflow models serve` would, so MLflow
    clients work unchanged."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        status, answer, media = await run_in_threadpool(self.predictor.invoke, body, content_type)
        return Response(answer, status_code=status, media_type=media)


def _handlers(app: FastAPI, *, mlflow_paths: set[str], v2_paths: tuple[str, ...]) -> None:
    async def render(request: Request, error: Exception) -> Response:
        if not isinstance(error, WrapperError):
            error = _translate(error)
        path = request.url.path
        body = mlflow_body(error) if path in mlflow_paths else v2_body(error) if path.startswith(v2_paths) \
            else error.body()
        return Response(body, status_code=error.status_code, media_type=JSON, headers=error.headers)

    for kind in (WrapperError, HTTPException, RequestValidationError, Exception):
        app.add_exception_handler(kind, render)


def _translate(error: Exception) -> WrapperError:
    if isinstance(error, HTTPException):
        return for_status(error.status_code, str(error.detail))
    if isinstance(error, RequestValidationError):
        return for_status(422, "invalid request")
    return unexpected(error)

