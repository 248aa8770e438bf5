"""The evaluate step of the pass (find → decide → fetch → evaluate → render → apply → record).

Called by the pass (`watcher.reconcile.actions`) for a version about to take traffic whose contract has an
`evaluation` section. The target runs `python -m model_wrapper evaluate` in the wrapper image
(a Kubernetes Job, or a local process) from a Job manifest derived from the version's own
Deployment; this module turns its figures into a verdict (`model_wrapper.contract.evaluation.verdict`),
logs them to MLflow and tags the version. The result is remembered per digest of the contract
and the data, so a version that passed is never evaluated again.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from model_wrapper.contract.evaluation import Evaluation, Figures, column_problem, verdict
from watcher.clients.artifacts import FoundContract, S3Store, model_bytes
from watcher.clients.registry import Registry
from watcher.decide.types import Live, VersionInfo
from watcher.errors import ContractInvalid, EvaluationFailed, Permanent, Retryable
from watcher.reconcile.ports import Target
from watcher.reconcile.record import Recorder
from watcher.render.manifests import (
    ANNOTATION,
    EVALUATES_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_NAME,
    MODEL_VERSION,
    RUNTIME,
    Rendered,
    validate_manifest,
)

log = logging.getLogger(__name__)
EVALUATION_STATUS = "evaluation_status"
SUMMARY = "evaluation_summary"
DIGEST = "evaluation_digest"
TTL_SECONDS = 3600
MAX_DATA_BYTES = 1 << 30  # the pod's /tmp (its scratch space, DEFAULT_SCRATCH_SIZE) holds the model and the data
HEADER_BYTES = 64 * 1024
GIB = 1 << 30


@dataclass(frozen=True)
class DataFile:
    uri: str
    size: int
    etag: str


@dataclass(frozen=True)
class Scratch:
    """The model pod's scratch space (its /tmp) and what the model's files take of it; the evaluation Job, which
    runs in the same pod spec, also downloads its data there."""

    model_uri: str
    model_bytes: int
    room: int
    size: str
    """As the contract or DEFAULT_SCRATCH_SIZE writes it."""

    def too_small(self, what: str, used: int) -> str:
        wanted = -(-used * 5 // 4 // GIB)  # a quarter more than the files, in whole GiB
        return (f"{what} {used / GIB:.2f} GiB, more than its scratch space ({self.size}, the pod's /tmp where the "
                f"wrapper downloads them); set serving.scratch_size in contract.yaml (e.g. {wanted}Gi), or ask ops "
                "to raise DEFAULT_SCRATCH_SIZE")


@dataclass(frozen=True)
class Gate:
    """The evaluation step, built once per pass's collaborators from the few it uses."""

    recorder: Recorder
    registry: Registry
    store: S3Store
    target: Target
    timeout_seconds: float
    """How long one evaluation may run (EVALUATION_TIMEOUT_SECONDS)."""
    clock: Callable[[], datetime]

    def before_rollout(self, version: VersionInfo, found: FoundContract, rendered: Rendered,
                       previous: Live | None, *, scratch: Scratch | None = None) -> None:
        """Pass, or raise EvaluationFailed / ContractInvalid (permanent) or Retryable (the run itself failed)."""
        evaluation = found.contract.evaluation
        if evaluation is None:
            return
        data = self._data_file(found, evaluation)
        digest = evaluation_digest(found, data)
        if version.tags.get(DIGEST) == digest and version.tags.get(EVALUATION_STATUS) == "passed":
            log.info("%s: passed the evaluation on %s before; not run again", version, evaluation.data)
            return
        live = self._live_version(version, previous) if evaluation.compare_with_live else None
        if scratch is not None:
            self._check_scratch(scratch, data, live, evaluation.data)
        self.recorder.evaluating(version, evaluation.data)
        job = evaluation_job(rendered, digest, live, self.timeout_seconds)
        result = _parse(self.target.evaluate(job, self.timeout_seconds + 60))
        if not result.get("ok"):
            message = f"evaluation on {evaluation.data} impossible: {result.get('message', 'no reason given')}"
            self.recorder.evaluated(version, passed=False, summary=message, digest=digest)
            raise ContractInvalid(message) if result.get("problem") == "contract" else Permanent(message)
        figures = _figures(result, evaluation, live)
        outcome = verdict(evaluation, figures)
        self.registry.log_evaluation(version, figures.metrics, int(self.clock().timestamp() * 1000))
        self.recorder.evaluated(version, passed=outcome.passed, summary=outcome.summary, digest=digest)
        if not outcome.passed:
            serving = f"; version {previous.version} keeps serving" if previous and previous.version else ""
            raise EvaluationFailed(outcome.message + serving)
        log.info("%s: passed the evaluation: %s", version, outcome.summary)

    def _data_file(self, found: FoundContract, evaluation: Evaluation) -> DataFile:
        if not found.origin.startswith("s3://"):
            raise ContractInvalid("an evaluation section needs a contract.yaml logged with the model")
        folder = found.origin.rsplit("/", 1)[0]
        uri = f"{folder}/{evaluation.data}"
        head = self.store.head(uri)
        if head is None:
            raise ContractInvalid(f"evaluation.data {evaluation.data!r} is missing: log it beside contract.yaml "
                                  f"(looked for {folder.rsplit('/', 1)[-1]}/{evaluation.data})")
        size, etag = head
        if size > MAX_DATA_BYTES:
            raise ContractInvalid(f"{evaluation.data} is {_size(size)}; the limit is {_size(MAX_DATA_BYTES)}; "
                                  "evaluate on a sample")
        if evaluation.data.lower().endswith(".csv"):
            _check_header(self.store.read(uri, HEADER_BYTES) or b"", found, evaluation)
        return DataFile(uri, size, etag)

    def _check_scratch(self, scratch: Scratch, data: DataFile, live: VersionInfo | None, name: str) -> None:
        """The Job's /tmp holds the version's files, the data unless it is among them (logged beside the run's
        contract), and the live version's files when it is compared with it."""
        needed = scratch.model_bytes + (0 if data.uri.startswith(scratch.model_uri.rstrip("/") + "/") else data.size)
        if live is not None:
            needed += model_bytes(self.store, self.registry, live)
        if needed > scratch.room:
            what = f"the files the evaluation needs ({'both versions, ' if live else 'the model, '}{name}) are"
            raise ContractInvalid(scratch.too_small(what, needed))

    def _live_version(self, version: VersionInfo, previous: Live | None) -> VersionInfo | None:
        """The version serving this model now, if another one does (the first version has nothing to beat)."""
        if previous is None or previous.model != version.name or previous.version in (None, version.version):
            return None
        return self.registry.get(version.name, int(previous.version or 0))


def evaluation_digest(found: FoundContract, data: DataFile) -> str:
    """Identifies what an evaluation measured: the contract and the data file's content."""
    text = json.dumps([found.contract.model_dump(mode="json"), data.uri, data.size, data.etag], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluation_job(rendered: Rendered, digest: str, live: VersionInfo | None, deadline: float) -> dict[str, Any]:
    """A batch/v1 Job running the evaluation in the Deployment's own pod spec (same image, security
    context, environment and Secret references), validated like every other manifest."""
    deployment = rendered.deployment
    slug = deployment["metadata"]["name"]
    pod = copy.deepcopy(deployment["spec"]["template"]["spec"])
    container = pod["containers"][0]
    for serving_only in ("ports", "startupProbe", "livenessProbe", "readinessProbe"):
        container.pop(serving_only, None)
    container["command"] = ["python", "-m", "model_wrapper", "evaluate"]
    container["args"] = ["--live-source", live.source, "--live-version", str(live.version),
                         "--live-run-id", live.run_id or ""] if live else []
    pod["restartPolicy"] = "Never"
    # Never the Deployment's selector labels: the Service must not send traffic to this pod.
    labels = {MANAGED_BY_LABEL: MANAGED_BY, "app.kubernetes.io/name": "model-evaluation", EVALUATES_LABEL: slug}
    notes = {key: deployment["metadata"]["annotations"][key] for key in (MODEL_NAME, MODEL_VERSION, RUNTIME)
             if deployment["metadata"]["annotations"].get(key)}
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(slug, digest), "namespace": deployment["metadata"]["namespace"],
                     "labels": labels, "annotations": {**notes, ANNOTATION + "evaluation-digest": digest}},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": int(deadline), "ttlSecondsAfterFinished": TTL_SECONDS,
                 "template": {"metadata": {"labels": labels, "annotations": notes}, "spec": pod}},
    }
    validate_manifest(job)
    return job


def job_name(slug: str, digest: str) -> str:
    """One Job per version and digest (a pass killed mid-way finds its Job again); under 63 characters,
    as the job-name label the Job controller puts on the pod must be."""
    return f"{slug[:43].rstrip('-')}-eval-{digest[:12]}"


def _check_header(start: bytes, found: FoundContract, evaluation: Evaluation) -> None:
    """A csv whose header already shows it cannot be scored fails here, without starting a Job."""
    line, complete = start.split(b"\n", 1)[0], b"\n" in start
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ContractInvalid(f"{evaluation.data} is not UTF-8 text; save it as UTF-8") from None
    if not complete:
        return  # a header longer than we read: the evaluation itself checks it
    columns = next(csv.reader([text.rstrip("\r")]), [])
    required = {name: spec.required for name, spec in found.contract.inputs.items()}
    if problem := column_problem(columns, required, evaluation.target, evaluation.data):
        raise ContractInvalid(problem)


def _size(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB" if count >= 1 << 20 else f"{count / 1024:.0f} KiB"


def _parse(raw: str) -> dict[str, Any]:
    try:
        result = json.loads(raw.strip().splitlines()[-1]) if raw.strip() else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise Retryable(f"the evaluation gave no result ({raw.strip()[:200] or 'no output'}); retrying next pass")
    return result


def _figures(result: dict[str, Any], evaluation: Evaluation, live: VersionInfo | None) -> Figures:
    try:
        metrics = {name: float(result["metrics"][name]) for name in evaluation.wanted}
        live_metrics = {name: float(value) for name, value in result["live"]["metrics"].items()} \
            if live is not None and evaluation.compare_with_live else None
        return Figures(metrics, int(result["rows"]), evaluation.data, live.version if live else None, live_metrics)
    except (KeyError, TypeError, ValueError) as e:
        raise Retryable(f"the evaluation's result lacks figures ({type(e).__name__}: {e}); retrying next pass") \
            from e
