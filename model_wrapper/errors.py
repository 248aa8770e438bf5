"""The wrapper's errors: the HTTP ones (one base class that carries its status code, one JSON shape) and the
load failure that keeps a model from serving.

Raised by the predictor and the endpoints; rendered by the single handler in `model_wrapper.http.app`.
Every error body is `{"error": {"status", "code", "message", "details"}}`, where each detail
names a `field` path such as `instances[0].petal_width`; on MLflow's scoring routes the same error
is rendered in MLflow's own shape, `{"error_code", "message"}` (`mlflow_body`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class WrapperError(Exception):
    """Base of every error the wrapper answers with; subclasses fix the status and code."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, details: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> bytes:
        error: dict[str, Any] = {"status": self.status_code, "code": self.code, "message": self.message,
                                 "details": self.details}
        return orjson.dumps({"error": error})


def unexpected(error: Exception) -> WrapperError:
    """A bug met while answering (not the request's fault, not the model's): logged with its traceback,
    answered as a 500 that says where to look and quotes nothing of it."""
    log.error("unexpected error while answering a request", exc_info=error)
    return WrapperError("internal error; the wrapper's log has the details")


class MalformedRequest(WrapperError):
    status_code = 400
    code = "malformed_request"


class Unauthorized(WrapperError):
    status_code = 401
    code = "unauthorized"


class NotFound(WrapperError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(WrapperError):
    status_code = 405
    code = "method_not_allowed"


class PayloadTooLarge(WrapperError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(WrapperError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidInput(WrapperError):
    status_code = 422
    code = "invalid_input"


class PredictionFailed(WrapperError):
    """The model raised on input that passed the contract. As `mlflow models serve` answers a model
    that raises, a 4xx: the instances are what the model rejects."""

    status_code = 422
    code = "prediction_failed"


class ModelFault(WrapperError):
    """The model itself failed (an MLflow internal error, an answer that is not JSON): a 5xx, so
    retries and alerts keyed on server errors see it."""

    status_code = 500
    code = "model_error"


class NotReady(WrapperError):
    status_code = 503
    code = "not_ready"


def for_status(status: int, message: str) -> WrapperError:
    """The error class for a status another layer chose (Starlette's 404/405, MLflow's codes)."""
    for cls in (MalformedRequest, Unauthorized, NotFound, MethodNotAllowed, PayloadTooLarge,
                UnsupportedMediaType, InvalidInput, NotReady):
        if cls.status_code == status:
            return cls(message)
    error = MalformedRequest(message) if 400 <= status < 500 else WrapperError(message)
    error.status_code = status
    return error


# MLflow's ErrorCode names (mlflow/exceptions.py ERROR_CODE_TO_HTTP_STATUS) for the statuses the
# wrapper answers with itself on MLflow's routes; MLflow has no code for 413 or 415 of its own.
MLFLOW_ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 404: "ENDPOINT_NOT_FOUND",
                      413: "REQUEST_LIMIT_EXCEEDED", 422: "INVALID_PARAMETER_VALUE", 500: "INTERNAL_ERROR",
                      503: "TEMPORARILY_UNAVAILABLE"}


def mlflow_body(error: WrapperError) -> bytes:
    """`error` as MLflow's scoring server serialises an MlflowException (`serialize_as_json`)."""
    code = MLFLOW_ERROR_CODES.get(error.status_code, "BAD_REQUEST" if error.status_code < 500 else "INTERNAL_ERROR")
    return json.dumps({"error_code": code, "message": error.message}).encode()


def field_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """`("instances", 0, "petal_width")` as `instances[0].petal_width`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(body)"


class ErrorDetail(BaseModel):
    field: str = Field(description="Path of the offending value, e.g. instances[0].petal_width")
    message: str


class ErrorBody(BaseModel):
    status: int
    code: str = Field(description="Stable machine-readable error code")
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """The shape of every error the wrapper returns."""

    error: ErrorBody


class LoadFailure(Exception):
    """The model cannot be served; the message is the one-line reason shown to the researcher (the pod's
    termination message, which the watcher copies into `deployment_message`). Not an HTTP error: while it
    stands, the endpoints answer NotReady."""


class SourceUnavailable(LoadFailure):
    """The model's files could not be fetched for a reason outside the version: S3 or MLflow unreachable,
    failing or refusing the wrapper's credentials. The process exits with its own code, so the watcher does
    not charge the version; the kubelet's restarts retry it."""


def v2_body(error: WrapperError) -> bytes:
    """`error` in the Open Inference Protocol's shape: `{"error": "..."}`."""
    return json.dumps({"error": error.message}).encode()
