"""A second Python runtime for the tests: the shared virtualenv plus LightGBM, as RUNTIME_IMAGES names one.

The shared .venv deliberately lacks LightGBM (it plays the runtime without the library). This one is a
`python -m venv` whose `.pth` file puts a LightGBM installed beside it, then the shared venv's packages,
on its path: built once and kept under ~/.cache, so CI pays for the download once.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

LIGHTGBM = "lightgbm==4.6.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "service-builder"


def lightgbm_runtime() -> Path:
    """The interpreter of a virtualenv that has LightGBM (and everything the shared venv has)."""
    shared = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(f"{sys.version}|{shared}|{LIGHTGBM}".encode()).hexdigest()[:12]
    root = CACHE / f"runtime-lightgbm-{key}"
    python = root / "bin" / "python"
    if (root / ".complete").exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(root)], check=True)
    extra = root / "extra"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(extra), LIGHTGBM],
                   check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "service-builder-shared.pth").write_text(f"{extra}\n{shared}\n")
    (root / ".complete").touch()
    return python


LOG_LIGHTGBM = """
import json, sys
import lightgbm, mlflow, mlflow.lightgbm
from devstack.models import iris_frame
features, target = iris_frame()
model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(features, target)
with mlflow.start_run():
    info = mlflow.lightgbm.log_model(model, name="model", registered_model_name=sys.argv[1],
                                     input_example=features[:2], extra_files=[sys.argv[2]],
                                     pip_requirements=[f"lightgbm=={lightgbm.__version__}"])
print(json.dumps({"version": info.registered_model_version, "predictions": model.predict(features[:3]).tolist(),
                  "rows": features[:3].to_dict(orient="records")}))
"""


def log_lightgbm_model(python: Path, name: str, contract: Path, cwd: Path) -> dict[str, object]:
    """Train and log a LightGBM iris model with `python` (this process cannot import lightgbm)."""
    done = subprocess.run([str(python), "-c", LOG_LIGHTGBM, name, str(contract)], check=True, capture_output=True,
                          text=True, cwd=cwd, timeout=300)
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer
