"""After a rollout: predict the contract's examples through the new endpoint before calling it deployed
(a model without fields: MLflow's saved serving input example, through invocations), and read the
environment differences the wrapper found (for the deployment_warnings tag).

The Service's endpoints and kube-proxy's rules are programmed asynchronously after the pods turn Ready,
so a refused connection or a 502/503/504 is retried, with growing pauses, for a bounded time
(SMOKE_TEST_SECONDS); an answer from the model itself (a 4xx, a wrong shape) fails at once.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from watcher.errors import RolloutFailed

NOT_YET = frozenset({502, 503, 504})


def smoke_test(base_url: str, examples: list[dict[str, Any]], timeout: float = 30, *, retry_for: float = 60,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
    """POST the examples to `<base>predict`; raise RolloutFailed unless every one gets a prediction."""
    body = json.dumps({"instances": examples}).encode()
    answer = _retried(lambda: _post(base_url, "predict", body, "the contract's examples", timeout),
                      "predict", retry_for, sleep, clock)
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(examples):
        raise RolloutFailed(f"smoke test: expected {len(examples)} predictions, got {str(answer)[:200]}")


def smoke_test_invocations(base_url: str, body: bytes, timeout: float = 30, *, retry_for: float = 60,
                           sleep: Callable[[float], None] = time.sleep,
                           clock: Callable[[], float] = time.monotonic) -> None:
    """POST MLflow's saved serving input example to `<base>invocations` (a model without fields has no
    predict); raise RolloutFailed unless it gets predictions."""
    answer = _retried(lambda: _post(base_url, "invocations", body, "the model's serving input example", timeout),
                      "invocations", retry_for, sleep, clock)
    if not isinstance(answer, dict) or "predictions" not in answer:
        raise RolloutFailed(f"smoke test: expected predictions from invocations, got {str(answer)[:200]}")


def _retried(call: Callable[[], Any], route: str, retry_for: float, sleep: Callable[[float], None],
             clock: Callable[[], float]) -> Any:
    give_up, pause = clock() + retry_for, 0.5
    while True:
        try:
            return call()
        except _NotYet as e:
            if clock() + pause > give_up:
                raise RolloutFailed(f"smoke test: {route} did not answer within {retry_for:.0f}s ({e})") from e
            sleep(pause)
            pause = min(pause * 2, 5.0)


class _NotYet(Exception):
    """The endpoint is not reachable yet (refused, reset, a gateway error)."""


def _post(base_url: str, route: str, body: bytes, what: str, timeout: float) -> Any:
    request = urllib.request.Request(f"{base_url.rstrip('/')}/{route}", data=body, method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our own endpoint
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode(errors="replace")
        if e.code in NOT_YET:
            raise _NotYet(f"{e.code}: {detail}") from e
        raise RolloutFailed(f"smoke test: {route} answered {e.code} to {what}: {detail}") from e
    except OSError as e:
        raise _NotYet(f"{type(e).__name__}: {e}") from e
    except ValueError as e:
        raise RolloutFailed(f"smoke test: {route} did not answer JSON ({e})") from e


def environment_warnings(base_url: str, timeout: float = 10) -> list[str]:
    """The differences the ready wrapper found between the model's logged environment and its own."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/ready", timeout=timeout) as response:  # noqa: S310
            answer = json.loads(response.read())
    except (OSError, ValueError) as e:
        raise RolloutFailed(f"ready stopped answering after the rollout ({type(e).__name__}: {e})") from e
    warnings = answer.get("warnings") if isinstance(answer, dict) else None
    return [str(w)[:200] for w in warnings[:20]] if isinstance(warnings, list) else []
