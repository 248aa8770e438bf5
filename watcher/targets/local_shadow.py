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
import random
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from yarl import URL

from model_wrapper.contract.comparison import Tally, is_prediction, target_at

__all__ = ["Shadow", "is_prediction", "upstream"]

MAX_IN_FLIGHT = 64
"""Mirrored requests awaiting their answer; beyond it a sample is skipped rather than queued behind the live one."""
MIRROR_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    content: bytes


class Shadow:
    """Serves the prediction requests of slugs that have a candidate, and keeps the comparison counters."""

    def __init__(self, client: aiohttp.ClientSession, forwarded: Any) -> None:
        self._client, self._forwarded = client, forwarded
        self._counters: dict[tuple[str, str], Tally] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def report(self, slug: str, candidate_url: str | None) -> Response:
        counters = self._counters.get((slug, candidate_url or ""), Tally())
        return JSONResponse({"candidate": candidate_url, **asdict(counters)})

    async def serve(self, request: Request, slug: str, picked: Any, live: Any, candidate: Any) -> Response:
        body, headers = await request.body(), self._forwarded(request)
        counters = self._counters.setdefault((slug, candidate.url), Tally())
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
            async with self._client.request(request.method, upstream(base, request), data=body, headers=headers,
                                            allow_redirects=False) as answer:
                return Answer(answer.status, dict(answer.headers), await answer.read())
        except (aiohttp.ClientError, TimeoutError):
            return None

    def _spawn(self, counters: Tally, other: str, request: Request, headers: dict[str, str], body: bytes,
               first: Answer, *, candidate_answered: bool) -> None:
        if len(self._tasks) >= MAX_IN_FLIGHT:
            counters.skipped += 1
            return
        task = asyncio.create_task(self._mirror(counters, other, request, headers, body, first, candidate_answered))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mirror(self, counters: Tally, other: str, request: Request, headers: dict[str, str], body: bytes,
                      first: Answer, candidate_answered: bool) -> None:
        try:
            async with self._client.request(request.method, upstream(other, request), data=body, headers=headers,
                                            allow_redirects=False, timeout=MIRROR_TIMEOUT) as answer:
                second = Answer(answer.status, {}, await answer.read())
        except (aiohttp.ClientError, TimeoutError):
            counters.mirror_failed += 1
            return
        live, candidate = (second, first) if candidate_answered else (first, second)
        counters.add(live.status, live.content, candidate.status, candidate.content)


def upstream(base: str, request: Request) -> URL:
    """The request's target at `base` as the caller sent it (`target_at`), for aiohttp to send as it is."""
    return URL(target_at(base, request.scope), encoded=True)


def _response(answer: Answer | None, slug: str, background: BackgroundTask | None = None) -> Response:
    if answer is None:
        return JSONResponse({"error": f"the wrapper of /{slug}/ did not answer"}, status_code=502)
    headers = {k: v for k, v in answer.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
    return Response(answer.content, status_code=answer.status, headers=headers, background=background)
