"""`POST /<slug>/api/predict`, the hot path: a plain ASGI endpoint over the predictor, and the inference log's tap.

Mounted by `model_wrapper.http.app`. FastAPI's request and dependency machinery would cost more than
validating the body and predicting, so this reads the body, predicts, and sends the bytes. Every answer
carries the request id (the caller's X-Request-ID, or a new one); a request the inference log samples
is queued there with what the model saw and answered, never waiting on the log.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool

from model_wrapper.errors import WrapperError
from model_wrapper.predict.inference_log import InferenceLog
from model_wrapper.predict.inference_records import Entry
from model_wrapper.predict.predictor import Predictor, Seen

# A caller's request id is echoed as it is when it is short printable ASCII; anything else is replaced.
_REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")


class PredictEndpoint:
    """Body bytes in, the predictor's JSON bytes out; errors raise to the app's one handler."""

    def __init__(self, predictor: Predictor, inference_log: InferenceLog | None = None) -> None:
        self.predictor = predictor
        self.inference_log = inference_log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        body = await read_body(receive)
        request_id = _request_id(scope)
        predictor, inference_log = self.predictor, self.inference_log
        seen = Seen() if inference_log is not None and inference_log.sampled() else None
        try:
            answer = predictor.predict_body(body, seen) if predictor.inline else await run_in_threadpool(
                predictor.predict_body, body, seen)
        except Exception as error:
            if isinstance(error, WrapperError):
                error.headers = {**error.headers, "X-Request-ID": request_id.decode()}
            if seen is not None and inference_log is not None:
                inference_log.add(_entry(request_id, started, seen, error))
            raise
        if seen is not None and inference_log is not None:
            inference_log.add(_entry(request_id, started, seen, None))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer)),
                                (b"x-request-id", request_id)]})
        await send({"type": "http.response.body", "body": answer})


async def read_body(receive: Any) -> bytes:
    """The whole request body from the ASGI `receive` channel (the guards have already bounded its size)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _request_id(scope: dict[str, Any]) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _REQUEST_ID.match(value):
            return bytes(value)
    return uuid.uuid4().hex.encode()


def _entry(request_id: bytes, started: float, seen: Seen, error: Exception | None) -> Entry:
    latency = time.perf_counter() - started
    status = 200 if error is None else error.status_code if isinstance(error, WrapperError) else 500
    return Entry(request_id.decode(), time.time() - latency, "predict", status, latency * 1000, seen.rows,
                 seen.answer if error is None else None, None if error is None else _error_text(error))


def _error_text(error: Exception) -> str:
    """The error's code only: its message and details may quote a value or name a `log: false` field."""
    return error.code if isinstance(error, WrapperError) else "internal_error"
