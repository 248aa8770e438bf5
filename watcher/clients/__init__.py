"""The outside services the pass reads and writes, each behind a small class whose errors leave as the
watcher's own (`watcher.errors`): `registry` (MLflow, the only importer of mlflow), `artifacts` (S3 with
boto3: contract.yaml and evaluation data), `smoke` (HTTP calls to a new endpoint), `scrape` (a wrapper's
`/metrics` and the comparison counters a rollout is judged by). May import config, decide and errors."""
