"""The inference log's S3 side: the bucket its files go to, and the client that puts them.

Given by `model_wrapper.log_process` to the writer process's `model_wrapper.predict.log_writer.LogWriter`,
whose writing thread calls both. boto3 with the wrapper's own credentials (its environment, as MLflow reads them).
"""

from __future__ import annotations

from typing import Any

from model_wrapper.config.settings import WrapperSettings
from model_wrapper.loading.sklearn_loader import artifact_location


class S3Sink:
    """Puts one object per call; botocore retries a failed call once, the log's writer then later."""

    def __init__(self, settings: WrapperSettings) -> None:
        import boto3
        from botocore.config import Config

        self._s3: Any = boto3.client("s3", endpoint_url=settings.mlflow_s3_endpoint_url or None, config=Config(
            connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"}))

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self._s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/vnd.apache.parquet")


def log_bucket(settings: WrapperSettings) -> str | None:
    """INFERENCE_LOG_BUCKET, else the bucket the model's artifacts are in (None when they are not in S3)."""
    if settings.inference_log_bucket:
        return settings.inference_log_bucket
    location = artifact_location(settings.model_source, settings.mlflow_tracking_uri)
    return location.removeprefix("s3://").split("/", 1)[0] if location else None
