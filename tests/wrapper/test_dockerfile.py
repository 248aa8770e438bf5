"""The shared image (top-level Dockerfile) runs what the tests run, as the cluster expects it.

No Docker engine runs here, so this reads the Dockerfile: its CMD is the entry point every
wrapper test starts, its environment names are real settings, and it is slim, pinned and
non-root on port 8080. The multi-worker mode the image's WORKERS selects is started for real, and its
/metrics reports the pod's totals whichever worker answers.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devstack.models import LoggedModel
from devstack.servers import LocalMlflow
from model_wrapper.config.settings import WrapperSettings
from model_wrapper.server import EXIT_LOAD_FAILED
from tests.wrapper.conftest import ENTRY_POINT, ROOT, WrapperProcess, model_env, unique
from tests.wrapper.models import log_iris_model

REQUESTS = 40

DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [line for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines() if line and not line.startswith("#")]


def _instruction(keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in INSTRUCTIONS if line.split(None, 1)[0] == keyword]


def test_the_image_starts_the_entry_point_the_tests_run() -> None:
    (cmd,) = _instruction("CMD")

    assert json.loads(cmd) == ENTRY_POINT
    assert "ENTRYPOINT" not in {line.split()[0] for line in INSTRUCTIONS}


def test_the_image_is_slim_pinned_non_root_and_listens_on_8080() -> None:
    assert re.search(r"python:3\.11-slim", DOCKERFILE)
    assert any("-r /tmp/requirements.txt" in run for run in _instruction("RUN"))
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    assert all("==" in line for line in requirements if line and not line.startswith("#"))
    (user,) = _instruction("USER")
    assert user.split(":")[0] not in {"0", "root"}
    assert _instruction("EXPOSE") == ["8080"]


def test_the_images_environment_names_are_wrapper_settings() -> None:
    names = {match for env in _instruction("ENV") for match in re.findall(r"(\w+)=", env)}
    runtime = names - {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPATH", "HOME", "PIP_NO_CACHE_DIR",
                       "PIP_DISABLE_PIP_VERSION_CHECK", "SKOPS_TRUST_CACHE"}  # the last: loading/skops_trust.py

    assert {"PORT", "WORKERS"} <= runtime
    assert {name.lower() for name in runtime} <= set(WrapperSettings.model_fields)


def test_model_dependencies_can_be_added_at_build_time() -> None:
    assert 'ARG EXTRA_REQUIREMENTS=""' in INSTRUCTIONS
    assert any("${EXTRA_REQUIREMENTS}" in run for run in _instruction("RUN"))


def test_the_build_context_holds_what_the_image_copies() -> None:
    for source in (line.split()[0] for line in _instruction("COPY")):
        assert (ROOT / source).exists(), source


def test_workers_from_the_environment_each_serve_the_model_and_metrics_count_for_the_pod(
    iris_model: LoggedModel, mlflow_server: LocalMlflow, tmp_path: Path,
) -> None:
    from model_wrapper.contract.naming import model_slug

    wrapper = WrapperProcess(model_env(iris_model, mlflow_server, WORKERS="2")).start()
    base = wrapper.base(model_slug(iris_model.name))
    try:
        wrapper.wait_until(base + "ready")
        import httpx

        def predict(_: int) -> str:  # a connection each: the kernel hands them to either worker
            return httpx.post(base + "predict", json={"instances": [{"sepal_length": 5.1, "sepal_width": 3.5,
                              "petal_length": 1.4, "petal_width": 0.2}]}, timeout=30).json()["labels"][0]

        with ThreadPoolExecutor(8) as pool:
            answers = set(pool.map(predict, range(REQUESTS)))
        assert answers == {"setosa"}
        # Whichever worker answers a scrape, it reports the pod's total, not its own share.
        root = base.split(f"/{model_slug(iris_model.name)}/")[0]
        for _ in range(10):
            scrape = httpx.get(root + "/metrics", timeout=30).text
            assert re.findall(r'^model_wrapper_requests_total\{[^}]*endpoint="predict"[^}]*status="200"[^}]*\} '
                              r"(\S+)$", scrape, re.M) == [f"{REQUESTS:.1f}"], scrape[:2000]
    finally:
        wrapper.stop()
    assert len(set(re.findall(r"Started server process \[(\d+)\]", wrapper.log()))) == 2


def test_a_worker_that_cannot_load_the_model_stops_the_whole_server(mlflow_server: LocalMlflow) -> None:
    model = log_iris_model(unique("wrapper-workers-bare"), contract=None, signature=False)
    wrapper = WrapperProcess(model_env(model, mlflow_server, WORKERS="2")).start()
    assert wrapper.exit_code() == EXIT_LOAD_FAILED
    assert "contract.yaml" in wrapper.termination_log.read_text()
