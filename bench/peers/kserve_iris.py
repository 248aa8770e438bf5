"""KServe's Python model server around the bench's estimator: `kserve.Model`, a bare predict.

Run by `bench.wrapper` with the kserve virtualenv's interpreter; PEER_PORT and PEER_MODEL (a joblib
file of the same fitted estimator the wrapper serves) come from the environment, as KServe parses
the command line itself. Serves `POST /v1/models/iris:predict` with `{"instances": [[...], ...]}`.
"""

from __future__ import annotations

import os
from typing import Any

import joblib
import kserve
import numpy as np


class Iris(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.estimator = joblib.load(path)
        self.ready = True

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        return {"predictions": self.estimator.predict(np.asarray(payload["instances"])).tolist()}


if __name__ == "__main__":
    server = kserve.ModelServer(http_port=int(os.environ["PEER_PORT"]), workers=1, enable_grpc=False,
                                enable_latency_logging=False)
    server.start([Iris("iris", os.environ["PEER_MODEL"])])
