"""What the wrapper's process imports before it loads a model: none of the libraries only some models or some
features need. Each would add its import time to every cold start (issue 26): MLflow (only `invocations` and
non-scikit-learn models), boto3 (only S3 sources and the inference log), pyarrow (only the inference log),
aiohttp (only a shadow's mirroring), and scikit-learn, pandas and skops (only the model's own loading); nor
pydantic-settings and httpx, which the wrapper does without."""

from __future__ import annotations

import json
import subprocess
import sys

LATER = ("mlflow", "boto3", "pyarrow", "httpx", "aiohttp", "sklearn", "pandas", "skops", "pydantic_settings")
CHECK = f"""
import json, sys
import model_wrapper.server
from model_wrapper.config.settings import load_settings
from model_wrapper.http.app import create_app
from model_wrapper.predict.predictor import Predictor
settings = load_settings({{"MODEL_NAME": "iris", "MODEL_VERSION": "1", "MODEL_SOURCE": "file:///nowhere"}})
create_app(settings, Predictor("iris", "1", 10), model_wrapper.server._inference_log(settings))
print(json.dumps(sorted(name for name in {LATER!r} if name in sys.modules)))
"""


def test_building_the_app_imports_no_library_that_only_some_models_or_features_need() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)

    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
