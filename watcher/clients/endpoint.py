"""A deployed model's MLflow scoring route, called for `mlflow deployments predict`.

Used by `watcher.entry.deployments`; answers the status and body as the wrapper gave them, so the
caller can show the wrapper's own message. A refused connection is the watcher's `Retryable`.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from watcher.errors import Retryable


def invoke(base_url: str, body: bytes, timeout: float = 60) -> tuple[int, str]:
    """POST `body` (JSON) to `<base>invocations`; the status and the answer's text."""
    if not base_url.startswith(("http://", "https://")):
        raise Retryable(f"the endpoint {base_url!r} is not an http(s) URL")
    request = urllib.request.Request(base_url.rstrip("/") + "/invocations", data=body, method="POST",  # noqa: S310
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - checked just above
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except OSError as e:
        raise Retryable(f"the endpoint {base_url} did not answer: {e}") from e
