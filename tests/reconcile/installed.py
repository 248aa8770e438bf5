"""The project installed as a user installs it, for the tests of its entry points (the `mlflow.deployments`
target, the `service-builder` console script).

`pip install --no-deps -e .` into a `python -m venv` whose `.pth` file puts the shared virtualenv's
packages on its path: the shared venv itself is never written to. Built once per checkout and kept
under ~/.cache/service-builder (the first build fetches setuptools for pip's isolated build).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.reconcile.runtimes import CACHE

ROOT = Path(__file__).resolve().parents[2]


def installed_python() -> Path:
    """The interpreter of a virtualenv with this checkout installed (editable) and the shared packages."""
    shared = sysconfig.get_paths()["purelib"]
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    key = hashlib.sha256(f"{sys.version}|{shared}|{ROOT}|".encode() + pyproject).hexdigest()[:12]
    root = CACHE / f"project-{key}"
    python = root / "bin" / "python"
    if (root / ".complete").exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(root)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "service-builder-shared.pth").write_text(f"{shared}\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True,
                   timeout=600, cwd=root)
    (root / ".complete").touch()
    return python
