"""A self-contained local stack (MLflow server, S3, example models) for the demo and the tests."""
