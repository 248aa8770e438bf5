"""After a rollout: predict the contract's examples through the new endpoint before calling it deployed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from watcher.errors import RolloutFailed


def smoke_test(base_url: str, examples: list[dict[str, Any]], timeout: float = 30) -> None:
    """POST the examples to `<base>predict`; raise RolloutFailed unless every one gets a prediction."""
    body = json.dumps({"instances": examples}).encode()
    request = urllib.request.Request(f"{base_url.rstrip('/')}/predict", data=body, method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our own endpoint
            answer = json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode(errors="replace")
        raise RolloutFailed(f"smoke test: predict answered {e.code} to the contract's examples: {detail}") from e
    except (OSError, ValueError) as e:
        raise RolloutFailed(f"smoke test: predict did not answer ({type(e).__name__}: {e})") from e
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(examples):
        raise RolloutFailed(f"smoke test: expected {len(examples)} predictions, got {str(answer)[:200]}")
