"""Drives an Open Inference Protocol server with `tritonclient.http`, as a user's code would; prints JSON.

Run by tests/wrapper/test_open_inference_clients.py with the interpreter of MLServer's virtualenv
(which has tritonclient[http]): `python triton_client.py HOST:PORT[/BASE] MODEL columns|tensor`
(the iris columns, or a float32 [2, 3] tensor `x`).
JSON tensors (`binary_data=False`): the binary tensor format is Triton's extension, not the protocol.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient

IRIS = {"sepal_length": [5.1, 5.0, 7.7], "sepal_width": [3.5, 2.0, 2.8], "petal_length": [1.4, 3.5, 6.7],
        "petal_width": [0.2, 1.0, 2.0]}


def main(url: str, model: str, kind: str) -> None:
    client = httpclient.InferenceServerClient(url=url)
    if kind == "columns":
        inputs = []
        for name, values in IRIS.items():
            column = httpclient.InferInput(name, [3, 1], "FP64")
            column.set_data_from_numpy(np.array(values).reshape(3, 1), binary_data=False)
            inputs.append(column)
    else:
        inputs = [httpclient.InferInput("x", [2, 3], "FP32")]
        inputs[0].set_data_from_numpy(np.array([[1, 2, 3], [4, 5, 6]], np.float32), binary_data=False)
    result = client.infer(model, inputs, outputs=[httpclient.InferRequestedOutput("output-1", binary_data=False)])
    print(json.dumps({
        "live": client.is_server_live(), "ready": client.is_server_ready(), "model_ready": client.is_model_ready(model),
        "metadata": client.get_model_metadata(model), "server": sorted(client.get_server_metadata()),
        "output": result.as_numpy("output-1").tolist(), "dtype": str(result.as_numpy("output-1").dtype)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
