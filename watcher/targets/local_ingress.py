"""The local target's handle on its front (`local_front`): start it, route a slug, drop a route, stop it.

Called by `watcher.targets.local.LocalTarget` only. The front is a process of its own, so the endpoint outlives a
`run-once`; its pid and port are kept in `<LOCAL_STATE_DIR>/front/process.json` for the next run to find.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import watcher
from watcher.errors import RolloutFailed
from watcher.targets.local_front import HEALTH_PATH, ROUTES_FILE, Backend, alive, read_routes, write_routes

START_SECONDS = 20.0


class Front:
    """The front of one state directory."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self._dir = state_dir / "front"
        self._wanted_port = port

    def port(self) -> int | None:
        """The running front's port, else None."""
        record = self._record()
        return int(record["port"]) if record else None

    def url(self, slug: str) -> str:
        port = self.port() or self._wanted_port or self._last_port()
        return f"http://127.0.0.1:{port}/{slug}/api/"

    def routes(self) -> dict[str, list[Backend]]:
        """What the running front routes (nothing when it does not run)."""
        return read_routes(self._dir / ROUTES_FILE) if self._record() else {}

    def ensure(self) -> None:
        """Start the front unless it runs; raise RolloutFailed naming LOCAL_FRONT_PORT if it cannot serve."""
        if self._record() is not None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        # Routes to processes that died with the old front would only make the new one exit at once.
        live = {slug: kept for slug, backends in read_routes(self._dir / ROUTES_FILE).items()
                if (kept := [b for b in backends if alive(b.pid)])}
        write_routes(self._dir / ROUTES_FILE, live)
        port = self._wanted_port or self._last_port() or _free_port()  # the address it had, where it can
        with open(self._dir / "front.log", "ab") as log:
            command = [sys.executable, "-m", "watcher.targets.local_front", str(self._dir), str(port)]
            process = subprocess.Popen(command, env={**os.environ, **importable()}, cwd=self._dir, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if _health(port) == str(self._dir):
                _write(self._dir / "process.json", {"pid": process.pid, "port": port})
                return
            time.sleep(0.1)
        _stop(process.pid)
        raise RolloutFailed(f"the local front could not serve on 127.0.0.1:{port} (LOCAL_FRONT_PORT; is another "
                            f"program using it?): {self._last_words()}")

    def route(self, slug: str, backends: list[Backend]) -> None:
        """Send the slug's traffic to `backends` from the next request on (weight 0: known, sent nothing)."""
        routes = read_routes(self._dir / ROUTES_FILE)
        routes[slug] = backends
        write_routes(self._dir / ROUTES_FILE, routes)

    def add(self, slug: str, backend: Backend) -> None:
        """One more backend for the slug beside those it has (a starting process, at weight 0)."""
        self.route(slug, [*read_routes(self._dir / ROUTES_FILE).get(slug, []), backend])

    def forget(self, slug: str, pid: int) -> None:
        """Remove one backend of the slug (a process that will not serve)."""
        backends = [b for b in read_routes(self._dir / ROUTES_FILE).get(slug, []) if b.pid != pid]
        if backends:
            self.route(slug, backends)
        else:
            self.drop(slug)

    def drop(self, slug: str) -> None:
        """Stop routing the slug; with nothing left to route, stop the front."""
        routes = read_routes(self._dir / ROUTES_FILE)
        routes.pop(slug, None)
        if routes:
            write_routes(self._dir / ROUTES_FILE, routes)
        else:
            self.stop()

    def stop(self) -> None:
        record = self._record()
        if record is not None:
            _stop(int(record["pid"]))
        for name in ("process.json", ROUTES_FILE):
            (self._dir / name).unlink(missing_ok=True)

    def _record(self) -> dict[str, int] | None:
        """The running front's pid and port."""
        record = self._last_record()
        return record if record and _is_front(record.get("pid")) else None

    def _last_record(self) -> dict[str, int] | None:
        try:
            return dict(json.loads((self._dir / "process.json").read_text()))
        except (OSError, ValueError):
            return None

    def _last_port(self) -> int:
        return int((self._last_record() or {}).get("port", 0))

    def _last_words(self) -> str:
        lines = (self._dir / "front.log").read_text(errors="replace").strip().splitlines()
        return (lines[-1] if lines else "no output")[:300]


def importable() -> dict[str, str]:
    """PYTHONPATH for a child `python -m watcher...|model_wrapper`: found from any working directory (a
    researcher's script runs in theirs), whether this checkout is installed or not."""
    root = str(Path(watcher.__file__).resolve().parent.parent)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def _is_front(pid: object) -> bool:
    if not isinstance(pid, int) or not alive(pid):
        return False
    try:
        return b"watcher.targets.local_front" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stop(pid: int, grace: float = 5) -> None:
    stop_group(pid, alive, grace)


def stop_group(pid: int, running: Callable[[int], bool], grace: float) -> None:
    """SIGTERM the process group of `pid`, and SIGKILL it if `running` still says so after `grace` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if running(pid):
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _health(port: int) -> str | None:
    """The state directory of the front answering on `port`, else None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=2) as answer:
            return str(json.loads(answer.read()).get("state_dir"))
    except (OSError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write(path: Path, record: dict[str, int]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(path)
