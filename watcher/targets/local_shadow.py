"""The local front's half of progressive delivery: prediction requests while a candidate runs beside the live
version. Shadow: the live version answers, and a sample is sent to the candidate as well. Canary: the
candidate answers its share; a 5xx from it is answered by the live version instead (a prediction can be asked
twice), and a sample is asked of the live version as well. The second request starts once the caller has the
whole answer, in a task of its own, and its answer is compared with the first; the counts are what the
watcher's analysis reads (`/_front/compare/<slug>`).

Used by `watcher.targets.local_front` only.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MAX_IN_FLIGHT = 64
"""Mirrored requests awaiting their answer; beyond it a sample is skipped rather than queued behind the live one."""
MIRROR_TIMEOUT = httpx.Timeout(30, connect=5)


@dataclass
class Counters:
    """One candidate's comparison with the live version (kept by the front for as long as it runs)."""

    compared: int = 0
    agreed: int = 0
    abs_diff_sum: float = 0.0
    abs_diff_count: int = 0
    rescued: int = 0
    mirror_failed: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    content: bytes


def is_prediction(method: str, path: str) -> bool:
    """The requests worth comparing: they carry inputs and answer predictions (`predict`, `invocations`, V2)."""
    return method == "POST" and path.endswith(("/api/predict", "/api/invocations", "/infer"))


def compare(live: bytes, candidate: bytes) -> tuple[bool, float, int] | None:
    """Whether two answers predict the same, and the sum and count of |candidate - live| over their numbers;
    None when they are not both predictions."""
    try:
        first, second = _predictions(json.loads(live)), _predictions(json.loads(candidate))
    except ValueError:
        return None
    if first is None or second is None:
        return None
    pairs = [(a, b) for a, b in zip(first, second, strict=False) if _number(a) and _number(b)]
    return first == second, float(sum(abs(float(b) - float(a)) for a, b in pairs)), len(pairs)


class Shadow:
    """Serves the prediction requests of slugs that have a candidate, and keeps the comparison counters."""

    def __init__(self, client: httpx.AsyncClient, forwarded: Any) -> None:
        self._client, self._forwarded = client, forwarded
        self._counters: dict[tuple[str, str], Counters] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def report(self, slug: str, candidate_url: str | None) -> Response:
        counters = self._counters.get((slug, candidate_url or ""), Counters())
        return JSONResponse({"candidate": candidate_url, **asdict(counters)})

    async def serve(self, request: Request, slug: str, picked: Any, live: Any, candidate: Any) -> Response:
        body, headers = await request.body(), self._forwarded(request)
        counters = self._counters.setdefault((slug, candidate.url), Counters())
        sampled = random.random() < candidate.sample  # noqa: S311 - a sample, not a secret
        if picked is candidate:
            answer = await self._send(candidate.url, request, headers, body)
            if answer is None or answer.status >= 500:
                counters.rescued += 1
                return _response(await self._send(live.url, request, headers, body), slug)
            mirror = (live.url, True) if sampled else None
        else:
            answer = await self._send(picked.url, request, headers, body)
            # Shadow only: in a canary the live version's own answers are not asked of the candidate as well.
            wanted = sampled and candidate.weight == 0 and answer is not None and answer.status < 300
            mirror = (candidate.url, False) if wanted else None
        if mirror is None or answer is None:
            return _response(answer, slug)

        async def after_the_answer() -> None:  # the caller has every byte by now
            self._spawn(counters, mirror[0], request, headers, body, answer, candidate_answered=mirror[1])

        return _response(answer, slug, BackgroundTask(after_the_answer))

    async def _send(self, base: str, request: Request, headers: dict[str, str], body: bytes) -> Answer | None:
        try:
            answer = await self._client.request(request.method, f"{base}{request.url.path}", content=body,
                                                params=request.url.query.encode(), headers=headers)
        except httpx.TransportError:
            return None
        return Answer(answer.status_code, dict(answer.headers), answer.content)

    def _spawn(self, counters: Counters, other: str, request: Request, headers: dict[str, str], body: bytes,
               first: Answer, *, candidate_answered: bool) -> None:
        if len(self._tasks) >= MAX_IN_FLIGHT:
            counters.skipped += 1
            return
        task = asyncio.create_task(self._mirror(counters, other, request, headers, body, first, candidate_answered))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mirror(self, counters: Counters, other: str, request: Request, headers: dict[str, str], body: bytes,
                      first: Answer, candidate_answered: bool) -> None:
        try:
            answer = await self._client.request(request.method, f"{other}{request.url.path}", content=body,
                                                params=request.url.query.encode(), headers=headers,
                                                timeout=MIRROR_TIMEOUT)
        except httpx.HTTPError:
            counters.mirror_failed += 1
            return
        second = Answer(answer.status_code, {}, answer.content)
        live, candidate = (second, first) if candidate_answered else (first, second)
        if live.status >= 300 or candidate.status >= 500:
            counters.mirror_failed += 1  # the caller's request, or a 5xx the candidate's own metrics count
        elif candidate.status >= 300:  # the live version answered what the candidate refused: no agreement
            counters.compared += 1
        elif (result := compare(live.content, candidate.content)) is not None:
            agreed, diff_sum, diff_count = result
            counters.compared += 1
            counters.agreed += agreed
            counters.abs_diff_sum += diff_sum
            counters.abs_diff_count += diff_count


def _response(answer: Answer | None, slug: str, background: BackgroundTask | None = None) -> Response:
    if answer is None:
        return JSONResponse({"error": f"the wrapper of /{slug}/ did not answer"}, status_code=502)
    headers = {k: v for k, v in answer.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
    return Response(answer.content, status_code=answer.status, headers=headers, background=background)


def _predictions(answer: Any) -> list[Any] | None:
    """The predictions of a `predict` or `invocations` answer, or a V2 answer's first output, flattened."""
    if isinstance(answer, dict) and isinstance(answer.get("predictions"), list):
        return _flat(answer["predictions"])
    if isinstance(answer, dict) and isinstance(answer.get("outputs"), list) and answer["outputs"]:
        data = answer["outputs"][0].get("data") if isinstance(answer["outputs"][0], dict) else None
        return _flat(data) if isinstance(data, list) else None
    return None


def _flat(values: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(_flat(value))
        elif isinstance(value, dict):
            flat.extend(value.get(key) for key in sorted(value))
        else:
            flat.append(value)
    return flat


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
