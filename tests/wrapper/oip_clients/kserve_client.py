"""Drives an Open Inference Protocol server with KServe's `InferenceRESTClient` (protocol v2); prints JSON.

Run by tests/wrapper/test_open_inference_clients.py with the interpreter of KServe's virtualenv:
`python kserve_client.py http://HOST:PORT[/BASE] MODEL columns|tensor`.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

IRIS = {"sepal_length": [5.1, 5.0, 7.7], "sepal_width": [3.5, 2.0, 2.8], "petal_length": [1.4, 3.5, 6.7],
        "petal_width": [0.2, 1.0, 2.0]}


async def main(url: str, model: str, kind: str) -> None:
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
        if kind == "columns":
            inputs = []
            for name, values in IRIS.items():
                column = InferInput(name, [3, 1], "FP64")
                column.set_data_from_numpy(np.array(values).reshape(3, 1), binary_data=False)
                inputs.append(column)
            request = InferRequest(model, inputs, parameters={"content_type": "pd"})
        else:
            x = InferInput("x", [2, 3], "FP32")
            x.set_data_from_numpy(np.array([[1, 2, 3], [4, 5, 6]], np.float32), binary_data=False)
            request = InferRequest(model, [x])
        result = await client.infer(url, request, model_name=model)
        answer = {"live": await client.is_server_live(url), "ready": await client.is_server_ready(url),
                  "model_ready": await client.is_model_ready(url, model), "name": result.outputs[0].name,
                  "output": result.outputs[0].as_numpy().tolist(), "dtype": str(result.outputs[0].as_numpy().dtype)}
    print(json.dumps(answer))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
