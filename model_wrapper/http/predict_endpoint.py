"""`POST /<slug>/api/predict`, the hot path: a plain ASGI endpoint over the predictor, and the inference log's tap
(`answer_logged`), which V2 infer (`model_wrapper.http.v2_routes`) shares.

Mounted by `model_wrapper.http.app`. FastAPI's request and dependency machinery would cost more than
validating the body and predicting, so this reads the body, predicts, and sends the bytes. Every answer
carries the request id (the caller's X-Request-ID, or a new one); a request the inference log samples
is queued there with what the model saw and answered, never waiting on the log.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from model_wrapper.errors import WrapperError, unexpected
from model_wrapper.http.guards import send_error
from model_wrapper.predict.inference_log import InferenceLog
from model_wrapper.predict.inference_records import Entry
from model_wrapper.predict.predictor import Predictor, Seen

# A caller's request id is echoed as it is when it is short printable ASCII; anything else is replaced.
_REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")
# A new one is 32 hex digits, as a UUID's: 64 random bits drawn once per process, then a counter. Unique
# across pods and restarts without a system call per request (uuid4 reads the kernel's random source each
# time: 4% of a one-row predict). An id names a request; it guards nothing, so it need not be unguessable.
_ID_PREFIX = os.urandom(8).hex().encode()
_ID_COUNTER = itertools.count()


class PredictEndpoint:
    """Body bytes in, the predictor's JSON bytes out. It answers its errors itself, in the wrapper's error shape
    as the app's handler would: it is reached before FastAPI's stack (`model_wrapper.http.app.HotPath`)."""

    def __init__(self, predictor: Predictor, inference_log: InferenceLog | None = None) -> None:
        self.predictor = predictor
        self.inference_log = inference_log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        predictor = self.predictor
        try:
            body = await read_body(receive)  # the guards' size limit raises here for a chunked body
            answer, request_id = await answer_logged(scope, started, self.inference_log, "predict",
                                                     predictor.inline, lambda seen: predictor.predict_body(body, seen))
        except Exception as error:  # answer_logged has already turned the model's and ours into WrapperErrors
            await send_error(send, error if isinstance(error, WrapperError) else unexpected(error))
            return
        await send_json(send, answer, request_id)


async def answer_logged(scope: dict[str, Any], started: float, inference_log: InferenceLog | None, route: str,
                        inline: bool, call: Callable[[Seen | None], bytes]) -> tuple[bytes, bytes]:
    """The answer of `call` (on the event loop when `inline`, else in the thread pool) and the request
    id; a request the inference log samples is queued there, answered or failed, never waiting on it.
    An error raised carries the request id too."""
    request_id = _request_id(scope)
    seen = Seen() if inference_log is not None and inference_log.sampled() else None
    try:
        answer = call(seen) if inline else await run_in_threadpool(call, seen)
    except Exception as error:
        failure = error if isinstance(error, WrapperError) else unexpected(error)
        failure.headers = {**failure.headers, "X-Request-ID": request_id.decode()}
        if seen is not None and inference_log is not None:
            inference_log.add(_entry(route, request_id, started, seen, failure))
        if failure is error:
            raise
        raise failure from error
    if seen is not None and inference_log is not None:
        inference_log.add(_entry(route, request_id, started, seen, None))
    return answer, request_id


async def send_json(send: Any, answer: bytes, request_id: bytes) -> None:
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
    return b"%s%016x" % (_ID_PREFIX, next(_ID_COUNTER))


def _entry(route: str, request_id: bytes, started: float, seen: Seen, error: WrapperError | None) -> Entry:
    latency = time.perf_counter() - started
    status = 200 if error is None else error.status_code
    return Entry(request_id.decode(), time.time() - latency, route, status, latency * 1000, seen.rows,
                 seen.answer if error is None else None, None if error is None else _error_text(error))


def _error_text(error: WrapperError) -> str:
    """The error's code only: its message and details may quote a value or name a `log: false` field."""
    return error.code
