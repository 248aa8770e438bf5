"""ASGI guards in front of the endpoints: API keys and the request-body size limit.

Installed by `create_app`. Pure ASGI, so a refused request costs no routing, no body read and
no task; a refusal is rendered in the wrapper's one error shape (MLflow's on MLflow's routes).
"""

from __future__ import annotations

import hmac
from typing import Any

from model_wrapper.errors import PayloadTooLarge, Unauthorized, WrapperError, mlflow_body, v2_body

Scope = dict[str, Any]


class Guards:
    """Refuse requests without a valid key (on protected paths) or with too large a body."""

    def __init__(self, app: Any, *, keys: list[bytes], protected: set[str], max_body_bytes: int,
                 mlflow_paths: frozenset[str] | set[str] = frozenset(), v2_paths: tuple[str, ...] = ()) -> None:
        self.app, self.keys, self.protected, self.max_body = app, keys, protected, max_body_bytes
        self.mlflow_paths, self.v2_paths = mlflow_paths, v2_paths

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        shape = "mlflow" if path in self.mlflow_paths else "v2" if self.v2_paths and path.startswith(self.v2_paths) \
            else "wrapper"
        protected = path in self.protected or (path.startswith(self.v2_paths) and path.endswith("/infer"))
        if self.keys and protected and not self._authorised(scope["headers"]):
            await send_error(send, Unauthorized("an API key is required: send it as 'X-API-Key: <key>' "
                                                "or 'Authorization: Bearer <key>'",
                                                headers={"www-authenticate": 'Bearer realm="model"'}),
                             shape=shape)
            return
        length = _content_length(scope["headers"])
        if length is not None and length > self.max_body:
            await send_error(send, PayloadTooLarge(f"the body is {length} bytes; {self._limit()}"), shape=shape)
            return
        await self.app(scope, self._limited(receive) if length is None else receive, send)

    def _authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        given = b""
        for name, value in headers:
            if name == b"x-api-key":
                given = value.strip()
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        matched = False
        for key in self.keys:  # no early exit: every key is compared, in constant time
            matched |= hmac.compare_digest(key, given)
        return matched

    def _limited(self, receive: Any) -> Any:
        """A chunked body has no declared length: count it as it arrives."""
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise PayloadTooLarge(f"the body is over {self.max_body} bytes; {self._limit()}")
            return message

        return counted

    def _limit(self) -> str:
        return (f"the limit is {self.max_body} bytes ({self.max_body / (1 << 20):g} MiB), set by the wrapper's "
                "MAX_BODY_BYTES; send smaller batches or raise it")


async def send_error(send: Any, error: WrapperError, *, shape: str = "wrapper") -> None:
    body = mlflow_body(error) if shape == "mlflow" else v2_body(error) if shape == "v2" else error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]  # ASGI's names are lower case
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
