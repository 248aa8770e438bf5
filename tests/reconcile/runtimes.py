"""A second Python runtime for the tests: the shared virtualenv plus XGBoost, as RUNTIME_IMAGES names one.

The shared .venv deliberately never gets xgboost (it plays the runtime without the library). This one is
a `python -m venv` whose `.pth` file puts an XGBoost installed beside it, then the shared venv's packages,
on its path: built once and kept under ~/.cache, so CI pays for the download once. XGBoost's CPU-only
wheel (manylinux2014, 5 MB) is asked for by platform: the default one bundles CUDA (over 200 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

XGBOOST = "xgboost==3.0.5"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "service-builder"


def xgboost_runtime() -> Path:
    """The interpreter of a virtualenv that has XGBoost (and everything the shared venv has)."""
    shared = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(f"{sys.version}|{shared}|{XGBOOST}".encode()).hexdigest()[:12]
    root = CACHE / f"runtime-xgboost-{key}"
    python = root / "bin" / "python"
    if (root / ".complete").exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(root)], check=True)
    extra = root / "extra"
    python_version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:", "--platform",
                    "manylinux2014_x86_64", "--python-version", python_version, "--target", str(extra), XGBOOST],
                   check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "service-builder-shared.pth").write_text(f"{extra}\n{shared}\n")
    (root / ".complete").touch()
    return python


# The native Booster: XGBoost's scikit-learn wrapper of the CPU wheels (up to 3.0) predates scikit-learn 1.9.
LOG_XGBOOST = """
import json, sys
import mlflow, mlflow.xgboost, xgboost
from devstack.models import iris_frame
features, target = iris_frame()
booster = xgboost.train({"objective": "multi:softmax", "num_class": 3, "max_depth": 3},
                        xgboost.DMatrix(features, label=target), num_boost_round=20)
with mlflow.start_run():
    info = mlflow.xgboost.log_model(booster, name="model", registered_model_name=sys.argv[1],
                                    input_example=features[:2], extra_files=sys.argv[2:],
                                    pip_requirements=[f"xgboost=={xgboost.__version__}"])
rows = features.iloc[[0, 60, 120]]  # one of each species
print(json.dumps({"version": info.registered_model_version,
                  "predictions": booster.predict(xgboost.DMatrix(rows)).tolist(),
                  "rows": rows.to_dict(orient="records")}))
"""
XGBOOST_CONTRACT = """\
description: Predicts the iris species (class index) with an XGBoost booster.
task: classification
inputs:
  sepal_length: {type: number, minimum: 0}
  sepal_width: {type: number, minimum: 0}
  petal_length: {type: number, minimum: 0}
  petal_width: {type: number, minimum: 0}
outputs:
  prediction: {type: number, description: Class index (XGBoost answers in floats)}
examples:
  - {sepal_length: 5.1, sepal_width: 3.5, petal_length: 1.4, petal_width: 0.2}
"""


def log_xgboost_model(python: Path, name: str, contract: Path, cwd: Path, *files: Path) -> dict[str, object]:
    """Train and log an XGBoost iris model with `python` (this process cannot import xgboost); `files` go
    beside its contract."""
    done = subprocess.run([str(python), "-c", LOG_XGBOOST, name, str(contract), *map(str, files)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"logging the XGBoost model failed:\n{done.stderr[-3000:]}")
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer
