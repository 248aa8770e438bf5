"""Benchmark aid: where the wrapper's cold start goes, from local model files, as a pyinstrument profile.

    python -m bench.cold_profile [--interval 0.001]

Saves the iris LogisticRegression with its contract as an MLflow model directory (in a child
process, so that MLflow's import is not profiled), keeps skops' trusted types as the image build
does, then profiles, in a fresh interpreter, the start-up steps `python -m model_wrapper` takes
before `ready` from a `file:///` source: settings, the app, scipy.special, `load_fast`, install and
warm-up (one thread here; the server runs the loading beside uvicorn). Prints pyinstrument's text
summary for BENCHMARKS.md. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAVE = """
import sys, pathlib, mlflow.sklearn
from devstack.models import IRIS_CONTRACT, iris_frame, train_iris
folder = pathlib.Path(sys.argv[1])
(folder / "files").mkdir()
(folder / "files" / "contract.yaml").write_text(IRIS_CONTRACT)
mlflow.sklearn.save_model(train_iris("logistic"), str(folder / "model"), input_example=iris_frame()[0].head(2),
                          extra_files=[str(folder / "files" / "contract.yaml")],
                          skops_trusted_types=["sklearn.tree._tree.Tree", "numpy.dtype"])
"""


def steps(workdir: Path) -> None:
    """What `model_wrapper.server.serve` and `load_into` do before ready, in one thread."""
    from model_wrapper.config.settings import load_settings
    from model_wrapper.http.app import create_app
    from model_wrapper.predict.predictor import Predictor
    from model_wrapper.server import _import_scipy_special

    settings = load_settings()
    predictor = Predictor(settings.model_name, settings.model_version, settings.max_batch)
    create_app(settings, predictor)
    import uvicorn  # noqa: F401 - the server's import

    _import_scipy_special()
    from model_wrapper.loading.sklearn_loader import load_fast

    loaded = load_fast(settings, workdir)
    if loaded is None:
        raise SystemExit("the model did not take the MLflow-free path")
    predictor.install(loaded[0])
    predictor.warm_up()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--interval", type=float, default=0.001)
    parser.add_argument("--steps", type=Path, help=argparse.SUPPRESS)  # the profiled child
    args = parser.parse_args(argv)
    if args.steps is not None:
        steps(args.steps)
        return 0
    with tempfile.TemporaryDirectory(prefix="cold-profile-") as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, "-c", SAVE, str(folder)], check=True, capture_output=True)
        env = {**os.environ, "MODEL_NAME": "iris", "MODEL_VERSION": "1", "MODEL_SOURCE": (folder / "model").as_uri(),
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        subprocess.run([sys.executable, "-m", "model_wrapper.loading.skops_trust"], env=env, check=True,
                       capture_output=True)
        print(f"Profiled {time.strftime('%Y-%m-%d %H:%M')} UTC, load average {os.getloadavg()[0]:.1f}.\n")
        subprocess.run([sys.executable, "-m", "pyinstrument", "--interval", str(args.interval), "-r", "text",
                        "--no-color", "--unicode", "-m", "bench.cold_profile", "--steps", str(folder / "work")],
                       env=env, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
