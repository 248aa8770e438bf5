"""The local target's front: one port that routes `/<slug>/...` to the model's current wrapper, as an Ingress does.

Started by `watcher.targets.local.LocalTarget` (`python -m watcher.targets.local_front STATE_DIR PORT`) when
it first deploys a model, stopped by it when the last model goes; it also exits by itself once none of the
processes it knows is alive, so a killed watcher (or killed wrappers) cannot leave it behind. The routes are
a JSON file the target replaces atomically: `{slug: [{"url": ..., "pid": ..., "weight": ...}, ...]}`. A
starting wrapper is listed at weight 0 (known, sent nothing) and gets the weight only once it is ready. A
slug maps to a set of weighted backends so that a canary or shadow split is a routes change, not a new front:
a backend marked `candidate` has its prediction requests served by `local_shadow` (mirrored, compared).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from watcher.targets.local_shadow import Shadow, is_prediction, upstream

ROUTES_FILE = "routes.json"
HEALTH_PATH = "/_front/health"
"""Where the front answers for itself; `_` cannot start a slug (a DNS label), so no model can shadow it."""
COMPARE_PATH = "/_front/compare"
"""`<COMPARE_PATH>/<slug>`: the comparison counters of the slug's candidate (`local_shadow.Counters`)."""
# Hop-by-hop headers (RFC 9110 §7.6.1) are the connection's, not the message's: never forwarded.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "content-length"})
_LIVENESS_SECONDS = 1.0
_ORPHANED_CHECKS = 3


@dataclass(frozen=True)
class Backend:
    """One wrapper process a slug's traffic may go to."""

    url: str
    pid: int
    weight: int = 100
    candidate: bool = False
    """A version on trial beside the live one: its answers are compared with the live version's."""
    sample: float = 0.0
    """The candidate's share of requests answered by both versions and compared (`local_shadow`)."""


class Routes:
    """The routes file, re-read whenever it changes (one stat per request)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: int | None = None
        self._routes: dict[str, list[Backend]] = {}

    def current(self) -> dict[str, list[Backend]]:
        try:
            stamp = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if stamp != self._stamp:
            self._routes, self._stamp = read_routes(self._path), stamp
        return self._routes

    def pick(self, slug: str) -> Backend | None:
        """A backend for one request, by weight (all weight on one backend until a split is asked for)."""
        backends = [b for b in self.current().get(slug, []) if b.weight > 0]
        if not backends:
            return None
        return random.choices(backends, weights=[b.weight for b in backends])[0]  # noqa: S311 - not security

    def candidate(self, slug: str) -> Backend | None:
        return next((b for b in self.current().get(slug, []) if b.candidate), None)

    def live(self, slug: str) -> Backend | None:
        """The live version's backend (the one a candidate's failed answer falls back to)."""
        return next((b for b in self.current().get(slug, []) if b.weight > 0 and not b.candidate), None)


def read_routes(path: Path) -> dict[str, list[Backend]]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {slug: [Backend(**item) for item in backends] for slug, backends in raw.items()}


def write_routes(path: Path, routes: dict[str, list[Backend]]) -> None:
    """Replace the routes at once: the front sees the old set or the new one, never half of it."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({slug: [vars(b) for b in backends] for slug, backends in routes.items()}))
    temporary.replace(path)


def create_front(routes: Routes, client: aiohttp.ClientSession, state_dir: Path) -> Starlette:
    shadow = Shadow(client, _forwarded)

    async def proxy(request: Request) -> Response:
        slug = request.path_params["path"].split("/", 1)[0]
        backend = routes.pick(slug)
        if backend is None:
            return JSONResponse({"error": f"no model is served under /{slug}/"}, status_code=404)
        candidate, live = routes.candidate(slug), routes.live(slug)
        if candidate is not None and live is not None and is_prediction(request.method, request.url.path):
            return await shadow.serve(request, slug, backend, live, candidate)
        try:  # the body as the wrapper sent it (no decompression): the caller gets its bytes and headers
            answer = await client.request(request.method, upstream(backend.url, request), headers=_forwarded(request),
                                          data=await request.body(), allow_redirects=False, auto_decompress=False)
        except (aiohttp.ClientError, TimeoutError) as e:
            return JSONResponse({"error": f"the wrapper of /{slug}/ did not answer: {type(e).__name__}"},
                                status_code=502)
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        return StreamingResponse(answer.content.iter_any(), status_code=answer.status, headers=headers,
                                 background=BackgroundTask(answer.release))

    async def health(request: Request) -> Response:
        # The state directory tells the target this is its own front, not another stack's on the same port.
        return JSONResponse({"state_dir": str(state_dir), "routes": sorted(routes.current())})

    async def compared(request: Request) -> Response:
        slug = request.path_params["slug"]
        candidate = routes.candidate(slug)
        return shadow.report(slug, candidate.url if candidate else None)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route(HEALTH_PATH, health), Route(f"{COMPARE_PATH}/{{slug}}", compared),
                             Route("/{path:path}", proxy, methods=methods)])


def _forwarded(request: Request) -> dict[str, str]:
    """The client's headers, plus what an Ingress adds, so the wrapper's redirects point at the front."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    client = request.client.host if request.client else ""
    headers["x-forwarded-for"] = ", ".join(filter(None, [request.headers.get("x-forwarded-for"), client]))
    headers["x-forwarded-proto"] = request.url.scheme
    return headers


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (Linux /proc, as the local target reads it)."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].startswith(" Z")
    except OSError:
        return False


async def _exit_when_orphaned(server: uvicorn.Server, routes: Routes) -> None:
    """Once routes exist, the front lives while one process it knows does (see the module docstring)."""
    orphaned = 0
    while not server.should_exit:
        await asyncio.sleep(_LIVENESS_SECONDS)
        current = routes.current()
        known = [b.pid for backends in current.values() for b in backends]
        orphaned = orphaned + 1 if current and not any(map(alive, known)) else 0
        server.should_exit = orphaned >= _ORPHANED_CHECKS


async def serve(state_dir: Path, port: int) -> None:
    routes = Routes(state_dir / ROUTES_FILE)
    # No timeout on reads: a model may take long on a big batch; the wrapper bounds its own work. aiohttp, not
    # httpx: the front's client work is on every request's path, and httpx spent 1.3 ms of CPU on a request where
    # aiohttp spends 0.3 ms. No Accept-Encoding of its own: the wrapper is asked for what the caller asked for.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                                     skip_auto_headers=["Accept-Encoding"]) as client:
        server = uvicorn.Server(uvicorn.Config(create_front(routes, client, state_dir), host="127.0.0.1", port=port,
                                               log_config=None, access_log=False, server_header=False,
                                               lifespan="off", ws="none"))
        watchdog = asyncio.create_task(_exit_when_orphaned(server, routes))
        await server.serve()
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog


def main(argv: list[str]) -> int:
    state_dir, port = Path(argv[0]), int(argv[1])
    asyncio.run(serve(state_dir, port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
