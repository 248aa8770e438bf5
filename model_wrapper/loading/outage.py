"""Whether a failure to fetch or load a model lies outside the version: S3 or MLflow unreachable, failing, or
refusing the wrapper's credentials, rather than the version's files being wrong or missing.

Called by the loaders where they download and by `model_wrapper.server` for anything else that stopped a load.
The difference decides the exit code, which the kubelet reports in `lastState.terminated.exitCode`: the
watcher charges a crash to the version only when the wrapper says the version is at fault.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.parse
from collections.abc import Iterator

from model_wrapper.errors import LoadFailure, SourceUnavailable

PROBE_SECONDS = 5
BUSY_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable",
                        "InternalError", "RequestLimitExceeded"})
"""S3 error codes (besides any 5xx) that say the service, not the object, is the problem right now."""
REFUSED_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
                           "InvalidToken", "AllAccessDisabled"})
"""S3 error codes for credentials ops gave the wrapper: their Secret to fix, not the version."""
MLFLOW_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "UNAUTHENTICATED", "PERMISSION_DENIED",
                          "CUSTOMER_UNAUTHORIZED"})
"""MLflow error codes (mlflow/protos/databricks.proto) of a registry that is busy or refuses the wrapper. Its
INTERNAL_ERROR counts only in the server's own answer (RestException): it is every MlflowException's default."""


def fetch_failure(message: str, error: BaseException) -> LoadFailure:
    """The LoadFailure to raise for `error` while fetching: SourceUnavailable when the sources were at fault."""
    return SourceUnavailable(message) if outside_the_version(error) else LoadFailure(message)


def endpoint_down(url: str | None) -> bool:
    """True when nothing answers a TCP connection at `url`'s host and port (S3's, when MLflow hid why a download
    failed: its runs:/ repository turns every error into "please ensure that the path is correct")."""
    if not url:
        return False
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=PROBE_SECONDS):
            return False
    except (OSError, ValueError):
        return True


def outside_the_version(error: BaseException) -> bool:
    """True when `error`, or any error it was raised from or while handling, is an outage or a refusal."""
    return any(_unavailable(e) for e in _chain(error))


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and every cause and context behind it (MLflow re-raises requests' errors without `from`)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]
        if isinstance(current, urllib.error.URLError) and isinstance(current.reason, BaseException):
            pending.append(current.reason)


def _unavailable(error: BaseException) -> bool:
    import botocore.exceptions
    import requests.exceptions
    import urllib3.exceptions

    if isinstance(error, SourceUnavailable | ConnectionError | TimeoutError):
        return True
    if isinstance(error, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError
                  | botocore.exceptions.NoCredentialsError):
        return True
    if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout
                  | requests.exceptions.RetryError | urllib3.exceptions.MaxRetryError
                  | urllib3.exceptions.NewConnectionError):
        return True
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code in (401, 403, 429)
    if isinstance(error, botocore.exceptions.ClientError):
        answer = error.response or {}
        code = str((answer.get("Error") or {}).get("Code") or "")
        status = int((answer.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        return status >= 500 or code in BUSY_CODES | REFUSED_CODES
    return _mlflow_unavailable(error)


def _mlflow_unavailable(error: BaseException) -> bool:
    """MLflow's own errors: a code that says so, or (artifact downloads collect their failures into one message,
    without the errors) botocore's wording of a connection failure."""
    import botocore.exceptions

    exceptions = sys.modules.get("mlflow.exceptions")  # not imported: the error cannot be MLflow's
    if exceptions is None or not isinstance(error, exceptions.MlflowException):
        return False
    code = str(error.error_code)
    if code in MLFLOW_CODES or (isinstance(error, exceptions.RestException) and code == "INTERNAL_ERROR"):
        return True
    wordings = (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)
    return any(wording.fmt.split(":")[0].split("{")[0] in str(error) for wording in wordings)
