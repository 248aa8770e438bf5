"""Drift measured end to end: replays sent to a real wrapper process, its inference log in moto's S3,
`python -m watcher drift` comparing the window with the version's evaluation data on the real MLflow
server, and the HTML report it logs opened in headless Chromium."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from devstack.models import IRIS_CONTRACT, IRIS_FEATURES, iris_frame, log_sklearn_model, train_iris
from devstack.servers import LocalMlflow
from tests.wrapper.conftest import Served, serve, unique
from tests.wrapper.models import REQUIREMENTS
from watcher.entry import cli
from watcher.render.drift_report import LIVE_COLOUR

CHROMIUM = Path("/usr/bin/chromium")
SHIFTED = "petal_length"
CONTRACT = IRIS_CONTRACT + """\
evaluation:
  data: evaluation.csv
  target: species
  metrics: {accuracy: {min: 0.5}}
drift: {max_psi: 0.2, min_requests: 100}
"""
PREFIX = f"drift-log-{unique('t')}"


@pytest.fixture(scope="module")
def served(mlflow_server: LocalMlflow) -> Iterator[Served]:
    features, target = iris_frame()
    data = features.assign(species=target).to_csv(index=False).encode()
    model = log_sklearn_model(unique("drift-iris"), train_iris(), features, contract=CONTRACT,
                              pip_requirements=REQUIREMENTS, files={"evaluation.csv": data})
    yield from serve(model, mlflow_server, INFERENCE_LOG_SAMPLE="1", INFERENCE_LOG_PREFIX=PREFIX,
                     INFERENCE_LOG_BATCH_SECONDS="0.3")


@pytest.fixture(scope="module")
def windows(served: Served) -> dict[str, tuple[str, str]]:
    """An unshifted replay, then one with petal_length's mean moved by two standard deviations: two windows."""
    features, _ = iris_frame()
    spans = {}
    for name, shift in (("unshifted", 0.0), ("shifted", 2 * float(features[SHIFTED].std()))):
        start = _now()
        rows = features.sample(600, replace=True, random_state=11)
        rows[SHIFTED] += shift
        for batch in np.array_split(rows.to_dict("records"), 20):
            assert served.post("predict", {"instances": list(batch)}).status_code == 200
        time.sleep(0.05)
        spans[name] = (start, _now())
        time.sleep(0.05)
    _wait_logged(served, requests=40)
    return spans


@pytest.fixture
def drift_env(monkeypatch: pytest.MonkeyPatch, mlflow_server: LocalMlflow, tmp_path: Path) -> None:
    for key, value in {**mlflow_server.client_env(), "INFERENCE_LOG_PREFIX": PREFIX, "DEPLOY_TARGET": "local",
                       "LOCAL_STATE_DIR": str(tmp_path / "state")}.items():
        monkeypatch.setenv(key, value)


def test_a_shifted_replay_is_reported_drifted_naming_the_feature(
        served: Served, windows: dict[str, tuple[str, str]], drift_env: None, capsys: pytest.CaptureFixture[str],
        _restore_logging: None) -> None:
    tags, metrics = _measure(served, windows["shifted"])

    assert tags["drift_status"] == "drifted", tags
    assert tags["drift_summary"].startswith(f"max PSI {metrics['drift_psi_petal_length']:.2f} ({SHIFTED}); 1 of 4 ")
    assert metrics["drift_psi_petal_length"] > 1 and metrics["drift_max_psi"] == metrics["drift_psi_petal_length"]
    assert all(metrics[f"drift_psi_{name}"] < 0.2 for name in IRIS_FEATURES if name != SHIFTED)
    assert f"drifted: {SHIFTED}" in capsys.readouterr().out


def test_an_unshifted_replay_is_not_drifted(served: Served, windows: dict[str, tuple[str, str]], drift_env: None,
                                            _restore_logging: None) -> None:
    tags, metrics = _measure(served, windows["unshifted"])

    assert tags["drift_status"] == "ok", tags
    assert metrics["drift_max_psi"] < 0.2
    assert "; 0 of 4 features drifted; " in tags["drift_summary"] and tags["drift_summary"].endswith(
        f"; 20 requests {windows['unshifted'][0][:10]}")


def test_a_change_of_status_is_logged_as_a_warning(served: Served, windows: dict[str, tuple[str, str]],
                                                   drift_env: None, capsys: pytest.CaptureFixture[str],
                                                   _restore_logging: None) -> None:
    _measure(served, windows["unshifted"])
    capsys.readouterr()

    _measure(served, windows["shifted"])

    lines = capsys.readouterr().err.splitlines()
    changes = [line for line in lines if " WARNING " in line and "drift status ok -> drifted" in line]
    assert len(changes) == 1 and f"({SHIFTED})" in changes[0], lines


def test_the_same_window_gives_the_same_figures_twice(served: Served, windows: dict[str, tuple[str, str]],
                                                     drift_env: None, _restore_logging: None) -> None:
    first = _measure(served, windows["shifted"])

    assert _measure(served, windows["shifted"]) == first


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_the_report_of_a_drifted_replay_shows_the_drifted_feature_s_chart_in_a_browser(
        served: Served, windows: dict[str, tuple[str, str]], drift_env: None, tmp_path: Path,
        artifacts_dir: Path, _restore_logging: None) -> None:
    pictures = {}
    for name in ("unshifted", "shifted"):
        _measure(served, windows[name])
        page = tmp_path / f"{name}.html"
        page.write_text(_report(served))
        pictures[name] = artifacts_dir / f"drift-report-{name}.png"
        _chromium(tmp_path / "profile", "--window-size=900,1200", f"--screenshot={pictures[name]}", page.as_uri())

    dom = _chromium(tmp_path / "profile", "--dump-dom", (tmp_path / "shifted.html").as_uri()).stdout
    assert f'aria-label="{SHIFTED}: PSI' in dom and dom.count("<svg") == 2  # the feature and the predictions
    assert _live_pixels(pictures["shifted"]) > 20 * _live_pixels(pictures["unshifted"]) > 0


def _measure(served: Served, window: tuple[str, str]) -> tuple[dict[str, str], dict[str, float]]:
    start, end = window
    since = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
    code = cli.main(["drift", served.model.name, served.model.version, "--since", f"{since:.3f}", "--until", end])
    assert code == 0
    client = MlflowClient()
    tags = client.get_model_version(served.model.name, served.model.version).tags
    metrics = client.get_run(served.model.run_id).data.metrics
    return ({k: v for k, v in tags.items() if k.startswith("drift")},
            {k: v for k, v in metrics.items() if k.startswith("drift")})


def _report(served: Served) -> str:
    path = f"drift/version-{served.model.version}/drift_report.html"
    return Path(MlflowClient().download_artifacts(served.model.run_id, path)).read_text()


def _live_pixels(png: Path) -> int:
    """Pixels of the live bars' colour: the legend's swatch, plus the charts' bars when there are charts."""
    colour = tuple(int(LIVE_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    image = Image.open(io.BytesIO(png.read_bytes())).convert("RGB")
    return sum(1 for pixel in image.getdata() if all(abs(a - b) < 8 for a, b in zip(pixel, colour, strict=True)))


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _wait_logged(served: Served, requests: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _written(served) < requests:
        assert time.monotonic() < deadline, f"the wrapper logged {_written(served)} of {requests} requests"
        time.sleep(0.2)


def _written(served: Served) -> float:
    text = served.client.get(served.base.replace(f"/{served.slug}/api/", "/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("model_wrapper_inference_log_records_total{") and 'outcome="written"' in line)

