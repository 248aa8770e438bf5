"""The Open Inference Protocol (V2 REST) routes, at the pod root and under the model's prefix.

Added by `create_app` (`model_wrapper.http.app`). Thin: each reads the path and body and calls the
predictor (`infer_v2`) or answers from what it already knows; errors raise to the app's one
handler, which renders them as `{"error": ...}` on these paths. The model is named by its slug; the
registered name is accepted too.
"""

from __future__ import annotations

import importlib.metadata
import time
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.routing import Route

from model_wrapper.errors import NotFound, NotReady
from model_wrapper.http.predict_endpoint import answer_logged, read_body, send_json
from model_wrapper.predict import v2
from model_wrapper.predict.inference_log import InferenceLog
from model_wrapper.predict.predictor import Predictor

JSON = "application/json"
SERVER_NAME = "service-builder-model-wrapper"


def v2_bases(prefix: str) -> tuple[str, str]:
    """Where the V2 paths start: the pod root (`/v2...`) and the model's prefix (`/<slug>/api/v2...`)."""
    return "/v2", f"{prefix}v2"


def add_v2_routes(app: FastAPI, predictor: Predictor, *, prefix: str, slug: str,
                  inference_log: InferenceLog | None = None) -> None:
    routes = V2Routes(predictor, slug, inference_log)
    for base in v2_bases(prefix):
        app.add_api_route(base, routes.server_metadata, methods=["GET"], include_in_schema=False)
        app.add_api_route(f"{base}/health/live", routes.live, methods=["GET"], include_in_schema=False)
        app.add_api_route(f"{base}/health/ready", routes.server_ready, methods=["GET"], include_in_schema=False)
        for model in (f"{base}/models/{{name}}", f"{base}/models/{{name}}/versions/{{version}}"):
            app.add_api_route(model, routes.model_metadata, methods=["GET"], include_in_schema=False)
            app.add_api_route(f"{model}/ready", routes.model_ready, methods=["GET"], include_in_schema=False)
            # The hot path is a plain ASGI endpoint, as predict's is: FastAPI's request machinery costs more
            # than decoding and predicting a small batch. First in the router: no other route shares its prefix.
            app.router.routes.insert(0, Route(f"{model}/infer", InferEndpoint(routes), methods=["POST"]))


class V2Routes:
    """The endpoints, over one predictor."""

    def __init__(self, predictor: Predictor, slug: str, inference_log: InferenceLog | None = None) -> None:
        self.predictor, self.slug, self.inference_log = predictor, slug, inference_log
        self.version = importlib.metadata.version("mlflow")

    async def live(self) -> Response:
        return _json({"live": True})

    async def server_ready(self) -> Response:
        if not self.predictor.ready:
            raise NotReady(self.predictor.reason)
        return _json({"ready": True})

    async def server_metadata(self) -> Response:
        return _json({"name": SERVER_NAME, "version": self.version, "extensions": []})

    async def model_ready(self, name: str, version: str | None = None) -> Response:
        self.check(name, version)
        if not self.predictor.ready:
            raise NotReady(self.predictor.reason)
        return _json({"name": self.slug, "ready": True})

    async def model_metadata(self, name: str, version: str | None = None) -> Response:
        self.check(name, version)
        model = self.predictor.installed()
        outputs = v2.ports(model.outputs, [], {}, prefix="output-")
        return _json({"name": self.slug, "versions": [self.predictor.version],
                      "platform": f"mlflow ({model.backend.description})",
                      "inputs": [port.metadata() for port in self.predictor.v2_inputs],
                      "outputs": [port.metadata() for port in outputs],
                      "parameters": {"content_type": v2.model_content_type(model.signature)}})

    def check(self, name: str, version: str | None) -> None:
        if name not in (self.slug, self.predictor.name):
            raise NotFound(f"model {name!r} is not served here; this server serves {self.slug!r} "
                           f"(registered as {self.predictor.name!r})")
        if version is not None and version != self.predictor.version:
            raise NotFound(f"version {version!r} of model {name!r} is not served here; "
                           f"this server serves version {self.predictor.version}")


class InferEndpoint:
    """`POST .../infer`: body bytes in, the predictor's V2 answer out, through the inference log's tap
    as predict's; errors raise to the app's one handler."""

    def __init__(self, routes: V2Routes) -> None:
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        params = scope["path_params"]
        self.routes.check(params["name"], params.get("version"))
        body = await read_body(receive)
        predictor, slug = self.routes.predictor, self.routes.slug
        answer, request_id = await answer_logged(scope, started, self.routes.inference_log, "v2 infer",
                                                 predictor.inline, lambda seen: predictor.infer_v2(body, slug, seen))
        await send_json(send, answer, request_id)


def _json(value: dict[str, Any]) -> Response:
    return Response(orjson.dumps(value), media_type=JSON)
