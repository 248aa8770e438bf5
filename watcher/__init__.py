"""Service Builder's watcher: reconciles MLflow model versions selected for production into live services.

Layers, top to bottom; a layer imports only those below it (import-linter holds this, `make lint`):

- `entry`: the CLI, the `watch` loop, the webhook receiver, metrics and health;
- `reconcile`: one pass (find, decide, fetch, evaluate, render, apply, record) over its ports;
- `targets`: where models run, `kubernetes` or `local` (each knows nothing of the other);
- `clients` (MLflow registry, S3, the HTTP smoke test) and `render` (Jinja2, schema validation);
- `config`: the one settings object and logging;
- `decide`: pure decisions and the plain data they take (no I/O library);
- `errors`: the error tree every layer raises.

Only `clients` and `targets` import mlflow, boto3, kubernetes or an HTTP client. Of the wrapper, only its
shared package `model_wrapper.contract` is used.
"""
