"""The Swagger page in a real browser (Debian's headless Chromium): it renders the predict
operation and the contract's fields from assets the wrapper serves itself; a screenshot is kept
in artifacts/ for a person to look at."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from devstack.models import IRIS_FEATURES
from tests.wrapper.conftest import Served

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")]


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _served_by_wrapper(served: Served) -> float:
    metrics = served.client.get(served.base.replace(f"/{served.slug}/api/", "/metrics")).text
    pattern = r'model_wrapper_requests_total{[^}]*endpoint="docs"[^}]*status="200"[^}]*} (\S+)'
    return sum(float(value) for value in re.findall(pattern, metrics))


def test_swagger_page_renders_predict_and_the_contract_fields_from_local_assets(
        iris: Served, tmp_path: Path, artifacts_dir: Path) -> None:
    before = _served_by_wrapper(iris)

    dom = _chromium(tmp_path / "profile", "--dump-dom", iris.base).stdout

    assert f'data-path="/{iris.slug}/api/predict"' in dom, dom[:2000]
    assert "Iris species" in dom
    for name in IRIS_FEATURES:
        assert f'"{name}"' in dom or f"&quot;{name}&quot;" in dom, name
    assert _served_by_wrapper(iris) - before >= 3, "page, stylesheet and script all come from the wrapper"


def test_a_screenshot_of_the_swagger_page_is_kept_as_an_artifact(iris: Served, tmp_path: Path,
                                                                  artifacts_dir: Path) -> None:
    screenshot = artifacts_dir / "wrapper-swagger.png"
    screenshot.unlink(missing_ok=True)

    _chromium(tmp_path / "profile", "--window-size=1280,1000", f"--screenshot={screenshot}", iris.base)

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000, "an empty page compresses to a few kilobytes"


def test_the_page_loads_nothing_from_other_hosts(iris: Served) -> None:
    page = iris.get("").text

    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page)
    assert iris.get("assets/swagger-ui-bundle.js").status_code == 200
