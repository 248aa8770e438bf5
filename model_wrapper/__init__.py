"""The model wrapper: one image that serves any MLflow model version as a typed HTTP API.

Layers, top to bottom; a layer imports only those below it (import-linter holds this, `make lint`):

- `server`: the process (settings, logging, uvicorn, loading beside it), and beside it `log_process`, the
  inference log's writer process (started by `predict.inference_log` with the command `server` gives it);
- `http` (the FastAPI app, guards, OpenAPI, Swagger UI, metrics) and `evaluate` (the evaluation Job);
- `loading`: the MLflow loader, the direct scikit-learn loader, environment checks (the only MLflow importers);
- `predict`: the transport-free predictor, request schemas and model backends;
- `config`: the wrapper's settings and logging;
- `errors`: the errors, HTTP ones carrying their status code;
- `contract`: the contract, the evaluation rules, naming, secret files and redaction, shared with the
  watcher; it imports nothing else of model_wrapper, and model_wrapper never imports the watcher.
"""
