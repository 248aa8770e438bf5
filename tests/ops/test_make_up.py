"""`make up` as a researcher uses it: start the stack, export what it prints, log and tag a model of one's
own, get an endpoint that answers, press Ctrl-C, and find nothing left running."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT, log_iris
from devstack.servers import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    found: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            found.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return found


def wait_for(found: queue.Queue[str], pattern: str, seen: list[str]) -> re.Match[str]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = found.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"make up never printed {pattern!r}:\n{''.join(seen)}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(")")[-1].startswith(" Z")
    except OSError:
        return False


def test_make_up_serves_a_model_the_researcher_logs_until_ctrl_c_then_leaves_nothing_running(
    monkeypatch: pytest.MonkeyPatch, model_name: str,
) -> None:
    ports = {"MLFLOW_PORT": free_port(), "S3_PORT": free_port(), "WEBHOOK_PORT": free_port(),
             "LOCAL_FRONT_PORT": free_port()}
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "AWS_"))}
    up = subprocess.Popen([sys.executable, "-m", "devstack.up"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True,
                          env={**env, **{key: str(port) for key, port in ports.items()}})
    seen: list[str] = []
    previous = mlflow.get_tracking_uri()
    try:
        assert up.stdout is not None
        output = lines_of(up.stdout)
        ui = wait_for(output, r"MLflow UI: (\S+) .*files in (\S+)\)", seen)
        exports = wait_for(output, r"^\s+export (.*)$", seen)
        wait_for(output, r"stop with Ctrl-C", seen)
        assert answers(ui[1])  # the UI itself
        for assignment in exports[1].split():
            key, _, value = assignment.partition("=")
            monkeypatch.setenv(key, value)
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])

        logged = log_iris(model_name)  # as the researcher would, in their own process
        MlflowClient().set_model_version_tag(model_name, logged.version, "deploy", "production")
        tags = deployed(model_name, logged.version, seen, output)

        examples = yaml.safe_load(IRIS_CONTRACT)["examples"]
        request = urllib.request.Request(f"{tags['model_endpoint']}predict", method="POST",
                                         data=json.dumps({"instances": examples}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["predictions"] == logged.model.predict(pd.DataFrame(examples)).tolist()
        wrappers = [json.loads(path.read_text())["pid"] for path in Path(ui[2], "state").glob("*.json")]
        assert wrappers and all(alive(pid) for pid in wrappers)
        assert tags["model_endpoint"].startswith(f"http://127.0.0.1:{ports['LOCAL_FRONT_PORT']}/"), \
            "served on the one port make up printed, as an Ingress host"
        front = json.loads(Path(ui[2], "state", "front", "process.json").read_text())["pid"]
        wrappers.append(front)

        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C in the terminal: the foreground process group
        assert up.wait(60) == 0, "".join(seen)

        assert not answers(ui[1]) and not answers(tags["model_endpoint"] + "health")
        assert not any(alive(pid) for pid in wrappers)
        assert not Path(ui[2]).exists()
    finally:
        mlflow.set_tracking_uri(previous)
        stop_process(up)  # only if the test failed before Ctrl-C


def deployed(name: str, version: str, seen: list[str], output: queue.Queue[str]) -> dict[str, Any]:
    """The version's tags once the watcher says deployed (webhook fast path, polling as the safety net)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        tags = dict(MlflowClient().get_model_version(name, version).tags)
        if tags.get("deployment_status") in ("deployed", "failed"):
            assert tags["deployment_status"] == "deployed", tags
            return tags
        time.sleep(0.5)
    while not output.empty():
        seen.append(output.get())
    raise AssertionError(f"never deployed:\n{''.join(seen)}")
