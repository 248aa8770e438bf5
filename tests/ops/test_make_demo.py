"""`make demo` as a newcomer runs it: it ends with a prediction, and it never points at a page it is about to
tear down. At a terminal it keeps the Swagger UI up until Enter; without one it points at `make up`."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devstack.servers import stop_process
from tests.ops.test_make_up import answers, lines_of, wait_for

ROOT = Path(__file__).resolve().parents[2]


def demo_env(tmp: Path) -> dict[str, str]:
    """A newcomer's shell: none of the session's MLflow or S3 variables; a temp directory of its own, so the test
    can count what the demo and its wrapper leave there (nothing)."""
    return {**{key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "AWS_"))},
            "TMPDIR": str(tmp)}


def test_the_demo_without_a_terminal_ends_with_a_prediction_points_at_make_up_and_leaves_nothing(
        tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "devstack.demo"], cwd=ROOT, env=demo_env(tmp_path), text=True,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=300)

    assert done.returncode == 0, done.stdout + done.stderr
    assert '-> {"predictions": [' in done.stdout
    assert "open it in a browser while the demo runs" not in done.stdout
    assert "to keep a Swagger UI like this one open, run: make up" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no demo or model-wrapper folder left behind"


def test_the_demo_at_a_terminal_keeps_the_swagger_ui_up_until_enter_then_cleans_up(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    demo = subprocess.Popen([sys.executable, "-m", "devstack.demo"], cwd=ROOT, env=demo_env(tmp_path),
                            text=True, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    os.close(follower)
    seen: list[str] = []
    try:
        assert demo.stdout is not None
        output = lines_of(demo.stdout)
        page = wait_for(output, r"the Swagger UI is at (\S+) now; open it in a browser", seen)[1]
        time.sleep(1)  # a person takes a moment: the page must still be there
        with urllib.request.urlopen(page, timeout=10) as response:
            assert response.status == 200 and b"swagger" in response.read().lower()

        os.write(leader, b"\n")
        assert demo.wait(60) == 0, "".join(seen)

        assert not answers(page)
        assert sorted(p.name for p in tmp_path.iterdir()) == []
    finally:
        os.close(leader)
        stop_process(demo)
