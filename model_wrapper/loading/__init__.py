"""Loading a model version: through MLflow (`mlflow_loader`), directly for scikit-learn models where that is
exact (`sklearn_loader`), the logged environment against this runtime's (`environment`), and the inference log's S3 sink
(`log_sink`). The only
wrapper package that imports MLflow or boto3. May import predict, config, errors and contract."""
