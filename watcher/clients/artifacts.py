"""Step 3 of the pass: fetch a version's `contract.yaml` from S3 with boto3 and validate it.

Look-up order: the model's files (`contract.yaml`, `extra_files/contract.yaml`), then the run's
`contract.yaml`; with none, a contract derived from the MLflow signature; with no signature either,
a failure that says how to add one. The only watcher module that imports boto3.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import boto3
import yaml
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from model_wrapper.contract.signature import contract_from_signature, signature_mismatches
from model_wrapper.contract.spec import (
    CONTRACT_FILE,
    HOW_TO_ADD,
    MAX_CONTRACT_BYTES,
    MAX_EXAMPLES,
    Contract,
    ContractError,
    parse_contract,
)
from watcher.clients.registry import Registry
from watcher.config.logs import redact
from watcher.decide.runtimes import needs
from watcher.decide.types import VersionInfo
from watcher.errors import Blocked, ContractInvalid, Permanent, Retryable

log = logging.getLogger(__name__)
_MISSING = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "InvalidToken", "ExpiredToken"}


class S3Store:
    """Reads small objects from S3 (or MinIO, moto) by `s3://bucket/key` URI."""

    def __init__(self, endpoint_url: str | None, access_key: str | None, secret_key: str | None) -> None:
        self._s3 = boto3.client(
            "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3, "mode": "standard"}))

    def read(self, uri: str, limit: int = MAX_CONTRACT_BYTES + 1) -> bytes | None:
        """The object's first `limit` bytes, or None when there is no such object."""
        bucket, key = _bucket_key(uri)
        try:
            response = self._s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}")
            return bytes(response["Body"].read())
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                return None
            if code == "InvalidRange":  # S3's answer to a ranged read of an empty object
                return b""
            if code == "NoSuchBucket":
                raise Permanent(f"S3 bucket {bucket!r} does not exist (reading s3://{bucket}/{key})") from e
            if code in _DENIED:
                raise Blocked(f"S3 refused access to s3://{bucket}/{key} ({code}); check the S3 credentials") from e
            raise Retryable(f"S3 error {code} reading s3://{bucket}/{key}") from e
        except BotoCoreError as e:
            raise Retryable(f"S3 unreachable reading s3://{bucket}/{key}: {type(e).__name__}") from e


    def keys(self, uri: str) -> list[str]:
        """The `s3://` URIs of every object under the folder `uri` (paged)."""
        bucket, items = self._listed(uri)
        return [f"s3://{bucket}/{item['Key']}" for item in items]

    def folder_bytes(self, uri: str) -> int:
        """The total size of every object under the folder `uri` (paged), from the listing alone."""
        return sum(int(item.get("Size") or 0) for item in self._listed(uri)[1])

    def _listed(self, uri: str) -> tuple[str, list[dict[str, Any]]]:
        """The bucket and the listing entries of every object under the folder `uri` (paged)."""
        bucket, prefix = _bucket_key(uri.rstrip("/") + "/")
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return bucket, [item for page in pages for item in page.get("Contents", [])]
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _DENIED:
                raise Blocked(f"S3 refused listing s3://{bucket}/{prefix} ({code}); check the S3 credentials") from e
            raise Retryable(f"S3 error {code} listing s3://{bucket}/{prefix}") from e
        except BotoCoreError as e:
            raise Retryable(f"S3 unreachable listing s3://{bucket}/{prefix}: {type(e).__name__}") from e

    def head(self, uri: str) -> tuple[int, str] | None:
        """The object's size and ETag (what its content is, without reading it), or None when absent."""
        bucket, key = _bucket_key(uri)
        try:
            response = self._s3.head_object(Bucket=bucket, Key=key)
            return int(response["ContentLength"]), str(response.get("ETag", "")).strip('"')
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                return None
            if code in _DENIED:
                raise Blocked(f"S3 refused access to s3://{bucket}/{key} ({code}); check the S3 credentials") from e
            raise Retryable(f"S3 error {code} reading s3://{bucket}/{key}") from e
        except BotoCoreError as e:
            raise Retryable(f"S3 unreachable reading s3://{bucket}/{key}: {type(e).__name__}") from e


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise Permanent(f"artifact location {redact(uri)} is not on S3; Service Builder reads contracts from S3")
    return parsed.netloc, parsed.path.lstrip("/")


@dataclass(frozen=True)
class FoundContract:
    contract: Contract
    origin: str
    """Where it came from: an s3:// URI, or `signature` when derived."""
    needs: tuple[str, ...] = ()
    """The version's flavours, then its requirements' packages: what picks its runtime image."""
    serving_example: bytes | None = None
    """For a model whose inputs cannot be fields (no `predict`): MLflow's saved `invocations` body,
    the smoke test's request."""


def fetch_contract(store: S3Store, registry: Registry, version: VersionInfo) -> FoundContract:
    """The version's validated contract, or ContractInvalid / Permanent / Retryable saying why not."""
    model_uri = registry.artifact_uri(version).rstrip("/")
    candidates = [f"{model_uri}/{CONTRACT_FILE}", f"{model_uri}/extra_files/{CONTRACT_FILE}"]
    if version.run_id:
        candidates.append(f"{registry.run_artifact_uri(version.run_id).rstrip('/')}/{CONTRACT_FILE}")
    mlmodel = store.read(f"{model_uri}/MLmodel")
    if mlmodel is None:
        raise Permanent(f"no MLmodel at {model_uri}/MLmodel: the files of {version} are missing from S3 "
                        "(deleted, or its source points somewhere else); register the version again")
    signature, example = _signature(store, model_uri, mlmodel)
    wanted = _needs(store, model_uri, mlmodel)
    for uri in candidates:
        data = store.read(uri)
        if data is not None:
            contract = _parse(data, uri)
            if signature and (problems := signature_mismatches(contract, signature)):
                raise ContractInvalid(f"contract.yaml disagrees with the model signature: {'; '.join(problems[:5])}")
            if not signature and not contract.inputs:
                raise ContractInvalid(f"contract.yaml has no inputs and the model no signature, so the API of "
                                      f"{version} cannot be described; {HOW_TO_ADD}")
            return _found(store, model_uri, mlmodel, contract, uri, wanted)
    if signature is None:
        raise ContractInvalid(f"no contract.yaml and no model signature for {version}; {HOW_TO_ADD}")
    try:
        return _found(store, model_uri, mlmodel, contract_from_signature(signature, example), "signature", wanted)
    except ContractError as e:
        raise ContractInvalid(str(e)) from e


def model_bytes(store: S3Store, registry: Registry, version: VersionInfo) -> int:
    """The size of the version's model files, which the wrapper downloads into its scratch space."""
    return store.folder_bytes(registry.artifact_uri(version))


def input_example(store: S3Store, registry: Registry, version: VersionInfo) -> list[Any] | None:
    """The version's logged input example (records for a column model), or None without one."""
    model_uri = registry.artifact_uri(version).rstrip("/")
    mlmodel = store.read(f"{model_uri}/MLmodel")
    return _signature(store, model_uri, mlmodel)[1] if mlmodel is not None else None


def _found(store: S3Store, model_uri: str, mlmodel: bytes, contract: Contract, origin: str,
           wanted: tuple[str, ...]) -> FoundContract:
    # Only a model without fields is smoke-tested through invocations, on MLflow's saved serving example.
    serving = None if contract.inputs else _serving_example(store, model_uri, mlmodel)
    return FoundContract(contract, origin, wanted, serving)


def _serving_example(store: S3Store, model_uri: str, raw: bytes) -> bytes | None:
    """MLflow's `serving_input_example.json` (its request body for the input example), when it has
    one of at most MAX_CONTRACT_BYTES; else None, and the smoke test is skipped."""
    mlmodel = yaml.safe_load(raw)  # already known to parse: `_signature`
    info = mlmodel.get("saved_input_example_info") if isinstance(mlmodel, dict) else None
    path = info.get("serving_input_path") if isinstance(info, dict) else None
    if not isinstance(path, str) or ".." in path.split("/"):
        return None
    data = store.read(f"{model_uri}/{path}")
    return data if data and len(data) <= MAX_CONTRACT_BYTES else None


def _needs(store: S3Store, model_uri: str, raw: bytes) -> tuple[str, ...]:
    """The MLmodel's flavours and the packages of its requirements.txt (already known parseable: `_signature`)."""
    mlmodel = yaml.safe_load(raw)
    flavours = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
    requirements = store.read(f"{model_uri}/requirements.txt", limit=256 * 1024)
    return needs([str(f) for f in flavours] if isinstance(flavours, dict) else [],
                 requirements.decode(errors="replace") if requirements else None)


def _parse(data: bytes, uri: str) -> Contract:
    try:
        return parse_contract(data)
    except ContractError as e:
        raise ContractInvalid(f"{e} ({uri.rsplit('/', 2)[-2]}/{CONTRACT_FILE})") from e


def _signature(store: S3Store, model_uri: str, raw: bytes) -> tuple[list[dict[str, Any]] | None, list[Any] | None]:
    """The signature's inputs (columns or a tensor) and input example from the MLmodel file, when
    the model has them.

    The file is registry content, so untrusted: one the wrapper could not load fails the version here.
    """
    try:
        mlmodel = yaml.safe_load(raw)
        signature = mlmodel.get("signature") or {} if isinstance(mlmodel, dict) else None
        if not isinstance(signature, dict):
            raise ValueError("it is not a mapping with a 'signature' mapping")
        encoded = signature.get("inputs")
        inputs = json.loads(encoded) if encoded is not None else None
        if inputs is not None and not (isinstance(inputs, list) and all(isinstance(c, dict) for c in inputs)):
            raise ValueError("its signature inputs are not a list of columns or tensors")
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else " ".join(str(e).split())[:200]
        raise Permanent(f"{model_uri}/MLmodel is not a valid MLflow model file ({reason}); log the model again") \
            from e
    if not inputs:
        return None, None
    info = mlmodel.get("saved_input_example_info")
    path = info.get("artifact_path") if isinstance(info, dict) else None
    safe = isinstance(path, str) and ".." not in path.split("/")  # an example beside the model, nowhere else
    return inputs, _example(store.read(f"{model_uri}/{path}")) if safe else None


def _example(raw: bytes | None) -> list[Any] | None:
    """The saved input example as records, or as rows of values for a tensor model; else None.

    MLflow saves a pandas example in split orientation, {"columns": [...], "data": [[...]]}, and a
    NumPy one as its nested list (older versions: {"inputs": [...]}).
    """
    try:
        document = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None
    if isinstance(document, dict) and isinstance(document.get("inputs"), list):
        document = document["inputs"]
    if isinstance(document, list):
        return document[:MAX_EXAMPLES]
    columns, rows = (document.get("columns"), document.get("data")) if isinstance(document, dict) else (None, None)
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)
            and isinstance(rows, list) and all(isinstance(row, list) for row in rows)):
        return None
    return [dict(zip(columns, row, strict=False)) for row in rows[:MAX_EXAMPLES]]
