"""The local target's candidates: a version on trial runs as a process of its own beside the live one, its
record in `<LOCAL_STATE_DIR>/candidates/<slug>.json`, and its share of traffic is a change of the front's routes.

Used by `watcher.targets.local.LocalTarget` only, which starts and stops the processes. Shadow is weight 0 with
a sample mirrored to it; canary N% is the candidate at weight N and the live version at 100 - N.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from watcher.clients.prometheus import Prometheus
from watcher.clients.scrape import comparison, wrapper_figures
from watcher.decide.progressive import Figures
from watcher.targets.local_front import COMPARE_PATH, Backend
from watcher.targets.local_ingress import Front


class Candidates:
    """The candidates of one state directory; `prometheus`: where the wrappers' figures are read, if not from the
    wrappers themselves (PROMETHEUS_URL)."""

    def __init__(self, state_dir: Path, front: Front, prometheus: Prometheus | None = None) -> None:
        self._dir = state_dir / "candidates"
        self._front = front
        self._prometheus = prometheus

    def states(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in sorted(self._dir.glob("*.json")):
            try:
                found[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a torn write from a killed run: the candidate is started again
        return found

    def begin(self, slug: str, candidate: dict[str, Any], live: dict[str, Any], percent: int, sample: float) -> None:
        """Record the candidate, then give it its first share (it is ready and smoke-tested by now)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self._dir / f"{slug}.json", json.dumps(candidate))
        self.split(slug, candidate, live, percent, sample)

    def split(self, slug: str, candidate: dict[str, Any], live: dict[str, Any], percent: int, sample: float) -> None:
        self._front.route(slug, [_backend(live, 100 - percent),
                                 Backend(url=_url(candidate), pid=candidate["pid"], weight=percent, candidate=True,
                                         sample=sample)])

    def promote(self, slug: str, candidate: dict[str, Any], state_file: Path) -> None:
        """The candidate becomes what the slug serves: its record replaces the live one's, all traffic is its."""
        write_atomically(state_file, json.dumps(candidate))
        self._front.route(slug, [_backend(candidate, 100)])
        (self._dir / f"{slug}.json").unlink(missing_ok=True)

    def discard(self, slug: str, live: dict[str, Any] | None) -> None:
        """All traffic back to the live version first; then the candidate's record goes (its process is the
        caller's to stop)."""
        if live is not None:
            self._front.route(slug, [_backend(live, 100)])
        (self._dir / f"{slug}.json").unlink(missing_ok=True)

    def figures(self, slug: str, candidate: dict[str, Any], live: dict[str, Any]) -> Figures:
        front_port = self._front.port()
        counters = comparison(f"http://127.0.0.1:{front_port}{COMPARE_PATH}/{slug}", _url(candidate))
        if self._prometheus is not None:  # the front's own counts are no Prometheus target: read from it still
            return self._prometheus.figures(candidate["model"], int(candidate["version"]), int(live["version"]),
                                            counters)
        return Figures(int(candidate["version"]), int(live["version"]), wrapper_figures(_url(candidate)),
                       wrapper_figures(_url(live)), counters)


def _backend(state: dict[str, Any], weight: int) -> Backend:
    return Backend(url=_url(state), pid=state["pid"], weight=weight)


def _url(state: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{state['port']}"


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)
