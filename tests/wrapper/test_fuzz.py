"""Schemathesis fuzzes the wrapper's own OpenAPI (valid and invalid inputs): never a 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.wrapper.conftest import Served

MIN_CASES = 500


def test_five_hundred_generated_requests_never_get_a_server_error(iris: Served, tmp_path: Path) -> None:
    command = [str(Path(sys.executable).parent / "st"), "run", iris.base + "openapi.json",
               "--checks", "not_a_server_error", "--max-examples", "170", "--seed", "20261122",
               "--request-timeout", "30", "--no-color", "--report", "junit", "--report-dir", str(tmp_path)]

    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    generated = re.search(r"(\d+) generated", output)
    assert generated is not None, output[-2000:]
    assert int(generated.group(1)) >= MIN_CASES, output[-2000:]
    assert iris.get("health").status_code == 200
