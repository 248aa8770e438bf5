"""The Open Inference Protocol's real peers for the tests, each in a virtualenv of its own.

MLServer (with `mlserver-mlflow`, serving the same MLflow model as the wrapper) pins a FastAPI the
project cannot share, and KServe's client pins another Starlette: each gets a `python -m venv` built
once by this module and kept under ~/.cache/service-builder, so CI on a fresh machine builds them too.
MLServer's venv also carries `tritonclient[http]` (MLServer depends on it), which drives the wrapper.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "service-builder"
# mlserver-mlflow 1.7.1 asks for mlflow>=2.19: the same mlflow as ours loads our models; sklearn and
# lightgbm as ours, so both servers predict with the same estimators.
PEERS = {
    "mlserver": ["mlserver==1.7.1", "mlserver-mlflow==1.7.1", "mlflow==3.17.2", "scikit-learn==1.9.1",
                 "lightgbm==4.7.0", "tritonclient[http]==2.73.0"],
    "kserve": ["kserve==0.21.0"],
}


def peer_python(name: str) -> Path:
    """The interpreter of the peer's virtualenv, built the first time (a few minutes, once)."""
    packages = PEERS[name]
    key = hashlib.sha256(f"{sys.version}|{'|'.join(packages)}".encode()).hexdigest()[:12]
    root = CACHE / f"peer-{name}-{key}"
    python = root / "bin" / "python"
    if (root / ".complete").exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
                   check=True, timeout=1800)
    (root / ".complete").touch()
    return python


if __name__ == "__main__":  # `make peers`: both at once, before the suite needs them
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor() as pool:
        for python in pool.map(peer_python, sys.argv[1:] or sorted(PEERS)):
            print(python)
