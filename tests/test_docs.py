"""What is committed next to the code stays true: the README's commands and settings, the example manifests."""

from __future__ import annotations

import re
from pathlib import Path

from devstack.examples import EXAMPLE, example_manifests
from watcher.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_demo_and_test_commands() -> None:
    opening = "\n".join(README.splitlines()[:6])
    assert "make demo" in opening and "make test" in opening


def test_readme_commands_are_makefile_targets_and_ci_runs_the_test_command() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_watcher_setting_is_documented_in_the_readme() -> None:
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in README]
    assert not missing, f"document these variables in README.md: {missing}"


def test_committed_example_manifests_match_the_templates() -> None:
    assert EXAMPLE.read_text() == example_manifests(), "templates changed: run `make examples` and commit"
