"""Step 5 of the pass on this machine (`DEPLOY_TARGET=local`): each model is a wrapper process.

Same lifecycle as Kubernetes (new, update, supersede, undeploy): the process is started from
the rendered Deployment's environment, a new version replaces the old one only once it is
ready, and the processes are tracked in a state directory so a later run finds them again.
One front (`watcher.local_ingress`, on LOCAL_FRONT_PORT) plays the Ingress: the endpoint of a model
stays the same across versions, and its route moves to a new process only once that one is ready. A version
with a `rollout` section runs as a candidate process beside the live one (`local_rollout`) until promoted.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_wrapper.contract.spec import Serving
from watcher.clients.prometheus import from_settings
from watcher.config.settings import Settings
from watcher.decide.rollout import WRAPPER_SOURCES_UNAVAILABLE
from watcher.decide.types import KINDS, Live
from watcher.errors import Busy, Retryable, RolloutFailed
from watcher.render.manifests import EVALUATES_LABEL, INPUTS_DIGEST, RUNTIME, Rendered
from watcher.targets.local_front import Backend
from watcher.targets.local_ingress import Front, importable, stop_group
from watcher.targets.local_rollout import Candidates, write_atomically

_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass
class LocalSnapshot:
    """The wrapper processes recorded in the state directory, by slug."""

    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    routed: frozenset[str] = frozenset()
    """The slugs the running front sends to their recorded process."""
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The versions on trial beside the live ones (`local_rollout`), by slug."""

    def live(self) -> list[Live]:
        return [Live(slug=slug, model=state["model"], version=int(state["version"]), spec_hash=state["spec_hash"],
                     inputs_digest=state.get("inputs_digest", ""),
                     serving=Serving.model_validate(state.get("serving") or {}), kinds=self._kinds(slug, state),
                     needs=tuple(state.get("needs") or ()), candidate=self._candidate(slug))
                for slug, state in sorted(self.states.items())]

    def _candidate(self, slug: str) -> int | None:
        """A candidate whose process died is not one: the rollout starts again."""
        state = self.candidates.get(slug)
        return int(state["version"]) if state and _alive(state.get("pid")) else None

    def _kinds(self, slug: str, state: dict[str, Any]) -> frozenset[str]:
        """What runs: nothing without the process; no Ingress where the front does not route to it (repaired)."""
        if not _alive(state.get("pid")):
            return frozenset()
        kinds = frozenset(state.get("kinds", KINDS))
        return kinds if slug in self.routed else kinds - {"Ingress"}


class LocalTarget:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dir = settings.local_state_dir.resolve()  # created by the first write: reading creates nothing
        self._pending: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        self._front = Front(self._dir, settings.local_front_port)
        self._candidates = Candidates(self._dir, self._front, from_settings(settings))

    def observe(self) -> LocalSnapshot:
        routes = self._front.routes()
        snapshot = LocalSnapshot(routed=frozenset(slug for slug, backends in routes.items()
                                                  if any(b.weight and not b.candidate and _alive(b.pid)
                                                         for b in backends)),
                                 candidates=self._candidates.states())
        for path in sorted(self._dir.glob("*.json")):
            try:
                snapshot.states[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a torn write from a killed run: the model is simply redeployed
        return snapshot

    def apply(self, rendered: Rendered, snapshot: LocalSnapshot) -> None:
        slug = rendered.deployment["metadata"]["name"]
        self._dir.mkdir(parents=True, exist_ok=True)
        self._front.ensure()
        port = _free_port()
        # No drain on SIGTERM: the local front moves the route before it stops a process, and _terminate's grace
        # would otherwise run out mid-drain and kill the wrapper before it removes its temporary folder.
        env = {**os.environ, **_container_env(rendered), "PORT": str(port), "HOST": "127.0.0.1", "DRAIN_SECONDS": "0",
               "LOG_FORMAT": "text", "TERMINATION_LOG": str(self._dir / f"{slug}.termination"), **importable()}
        env.update(self._secrets())
        (self._dir / f"{slug}.termination").unlink(missing_ok=True)
        log = open(self._dir / f"{slug}.log", "ab")  # noqa: SIM115 - handed to the child process
        # Its own working directory, as a pod has: nothing from where the watcher was started leaks into the model.
        process = subprocess.Popen([_interpreter(rendered), "-m", "model_wrapper"], env=env, cwd=self._dir, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._pending[slug] = (process, port)
        self._front.add(slug, Backend(url=f"http://127.0.0.1:{port}", pid=process.pid, weight=0))

    def wait_ready(self, rendered: Rendered, timeout: float) -> None:
        slug = rendered.deployment["metadata"]["name"]
        if slug not in self._pending:  # started by an earlier run: only check that it still answers
            if not _answers(f"{self.endpoint(slug)}ready"):
                raise RolloutFailed(f"the running wrapper does not answer at {self.endpoint(slug)}ready")
            return
        process, port = self._pending[slug]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                error = Retryable if process.returncode == WRAPPER_SOURCES_UNAVAILABLE else RolloutFailed
                raise error(f"the wrapper exited with code {process.returncode}: {self._last_words(slug)}")
            if _answers(f"http://127.0.0.1:{port}/{slug}/api/ready"):
                return
            time.sleep(0.2)
        raise RolloutFailed(f"not ready after {timeout:.0f}s: {self._last_words(slug)}")

    def evaluate(self, job: dict[str, Any], timeout: float) -> str:
        """Run the Job's command as a process here, with its environment; its result line."""
        slug = job["metadata"]["labels"][EVALUATES_LABEL]
        container = job["spec"]["template"]["spec"]["containers"][0]
        result = self._dir / f"{slug}.evaluation"
        self._dir.mkdir(parents=True, exist_ok=True)
        result.unlink(missing_ok=True)
        env = {**os.environ, **{item["name"]: item["value"] for item in container.get("env", []) if "value" in item},
               "LOG_FORMAT": "text", "TERMINATION_LOG": str(result), **self._secrets(), **importable()}
        # The interpreter RUNTIME_IMAGES chose for the model (the Job's image on this target), as for its wrapper.
        python = str(container["image"]) if job["metadata"]["annotations"].get(RUNTIME) else sys.executable
        command = [python, *container["command"][1:], *container.get("args", [])]
        with open(self._dir / f"{slug}.evaluation.log", "wb") as log:
            process = subprocess.Popen(command, env=env, cwd=self._dir, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                _terminate(process.pid, grace=5)
                process.wait()
                raise Retryable(f"the evaluation did not finish within {timeout:.0f}s; retrying next pass") from None
        if code != 0:
            lines = (self._dir / f"{slug}.evaluation.log").read_text(errors="replace").strip().splitlines()
            raise Retryable(f"the evaluation process exited with code {code}: "
                            f"{(lines[-1] if lines else 'no output')[:300]}; retrying next pass")
        return result.read_text(errors="replace") if result.exists() else ""

    def finish(self, rendered: Rendered, snapshot: LocalSnapshot) -> None:
        """Record the new process, then retire the one it replaces (so the endpoint never goes dark)."""
        slug = rendered.deployment["metadata"]["name"]
        state = self._state(rendered)
        write_atomically(self._dir / f"{slug}.json", json.dumps(state))
        self._front.route(slug, [Backend(url=f"http://127.0.0.1:{state['port']}", pid=state["pid"])])
        old = snapshot.states.get(slug)
        if old and old.get("pid") != state["pid"]:
            _terminate(old.get("pid"))
        self.discard_candidate(slug, snapshot, reroute=False)  # a version on trial gave way to this one

    def begin_rollout(self, rendered: Rendered, snapshot: LocalSnapshot, percent: int, sample: float, *,
                      compares: bool = False) -> None:
        """The ready new process becomes the slug's candidate beside the live one (replacing any earlier one); the
        front compares a canary's answers with live's whether or not the analysis is bounded by them."""
        slug = rendered.deployment["metadata"]["name"]
        self._candidates.begin(slug, self._state(rendered), snapshot.states[slug], percent, sample)
        earlier = snapshot.candidates.get(slug)
        if earlier:
            _terminate(earlier.get("pid"))

    def split(self, slug: str, snapshot: LocalSnapshot, percent: int, sample: float) -> None:
        self._candidates.split(slug, snapshot.candidates[slug], snapshot.states[slug], percent, sample)

    def rollout_figures(self, slug: str, snapshot: LocalSnapshot) -> Any:
        return self._candidates.figures(slug, snapshot.candidates[slug], snapshot.states[slug])

    def promote(self, slug: str, snapshot: LocalSnapshot, rendered: Any = None) -> None:
        """The candidate serves everything (its process is the one `rendered` describes); the version it replaces
        is stopped once no request goes to it."""
        self._candidates.promote(slug, snapshot.candidates[slug], self._dir / f"{slug}.json")
        _terminate(snapshot.states[slug].get("pid"))

    def discard_candidate(self, slug: str, snapshot: LocalSnapshot, *, reroute: bool = True) -> None:
        """Traffic back to the live version, then the candidate stops (`reroute` False: the routes are set)."""
        candidate = snapshot.candidates.get(slug)
        if candidate is None:
            return
        self._candidates.discard(slug, snapshot.states.get(slug) if reroute else None)
        _terminate(candidate.get("pid"))

    def _state(self, rendered: Rendered) -> dict[str, Any]:
        """What the state directory records of the pending process of `rendered`."""
        slug, release = rendered.deployment["metadata"]["name"], rendered.release
        process, port = self._pending.pop(slug)
        return {"model": release.name, "version": release.version, "spec_hash": rendered.spec_hash,
                "inputs_digest": rendered.deployment["metadata"]["annotations"][INPUTS_DIGEST],
                "kinds": sorted(m["kind"] for m in rendered.manifests),  # what the plan expects to find
                "serving": release.serving.model_dump(exclude_none=True), "needs": list(release.needs),
                "pid": process.pid, "port": port, "endpoint": self._front.url(slug)}

    def roll_back(self, rendered: Rendered, snapshot: LocalSnapshot) -> None:
        slug = rendered.deployment["metadata"]["name"]
        if slug in self._pending:
            process = self._pending.pop(slug)[0]
            self._front.forget(slug, process.pid)  # stops the front too, had it been started for this model alone
            _terminate(process.pid)

    def remove(self, slug: str, snapshot: LocalSnapshot) -> None:
        self._front.drop(slug)  # first: no request reaches a process being stopped
        state = snapshot.states.get(slug)
        if state:
            _terminate(state.get("pid"))
        self.discard_candidate(slug, snapshot, reroute=False)
        (self._dir / f"{slug}.json").unlink(missing_ok=True)

    def shutdown(self) -> None:
        """Stop every wrapper and the front (`make up` on Ctrl-C)."""
        snapshot = self.observe()
        for slug in list(snapshot.states):
            self.remove(slug, snapshot)
        self._front.stop()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        self._dir.mkdir(parents=True, exist_ok=True)
        with open(self._dir / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(f"another watcher is working on {self._dir}; leaving this pass to it") from None
            yield

    def endpoint(self, slug: str) -> str:
        """The stable address, through the front (as the Ingress host is on Kubernetes)."""
        return self._front.url(slug)

    def smoke_base(self, slug: str) -> str | None:
        """A new process is tried directly, before the front sends it any traffic."""
        if self._settings.smoke_test == "off":
            return None
        return self._direct(slug) if slug in self._pending else self.endpoint(slug)

    def _direct(self, slug: str) -> str:
        return f"http://127.0.0.1:{self._pending[slug][1]}/{slug}/api/"

    def _secrets(self) -> dict[str, str]:
        return {key: value.get_secret_value() for key in _SECRET_ENV
                if (value := getattr(self._settings, key.lower())) is not None}

    def _last_words(self, slug: str) -> str:
        termination = self._dir / f"{slug}.termination"
        if termination.exists() and (text := termination.read_text(errors="replace").strip()):
            return text[:400]
        lines = (self._dir / f"{slug}.log").read_text(errors="replace").strip().splitlines()
        return (lines[-1] if lines else "no output")[:400]


def _interpreter(rendered: Rendered) -> str:
    """The runtime RUNTIME_IMAGES chose (on this target a Python interpreter), else the watcher's own Python."""
    chosen = rendered.deployment["metadata"]["annotations"].get(RUNTIME)
    return str(rendered.deployment["spec"]["template"]["spec"]["containers"][0]["image"]) if chosen else sys.executable


def _container_env(rendered: Rendered) -> dict[str, str]:
    container = rendered.deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"model_wrapper" in cmdline and not Path(f"/proc/{pid}/stat").read_text().split(")")[-1].startswith(" Z")


def _terminate(pid: Any, grace: float = 10) -> None:
    if _alive(pid):
        stop_group(pid, _alive, grace)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return bool(response.status == 200)
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
