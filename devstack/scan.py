"""`make scan`: checkov, a Kubernetes scanner following the CIS benchmarks, over everything we ask ops to apply.

Scanned: the manifests the watcher renders for a few contracts, and `kustomize build` of cronjob/
and cronjob/watch/ (kubectl's built-in kustomize, or a `kustomize` binary). checkov lives in its
own virtualenv (.venv-checkov, made here from requirements-checkov.txt), so its pins never touch
the project's. The run fails on any failed check, and on any check skipped without a reason:
an intended exception carries `checkov.io/skipN: CKV_K8S_NN=<reason>` on the object it applies to.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-checkov"
REQUIREMENTS = ROOT / "requirements-checkov.txt"
KUSTOMIZATIONS = ("cronjob", "cronjob/watch")
# The contracts whose manifests are scanned: each switches on parts of the templates the others leave out.
CONTRACTS: dict[str, tuple[bytes, dict[str, Any]]] = {
    "model-default": (b"inputs: {x: {type: number}}\n", {}),
    "model-serving": (b"""inputs: {x: {type: number}}
serving:
  # no replicas: with autoscaling the HorizontalPodAutoscaler owns the count
  resources: {requests: {cpu: 500m, memory: 512Mi}, limits: {cpu: "2", memory: 2Gi}}
  autoscaling: {min_replicas: 2, max_replicas: 6, target_cpu_utilization: 70}
""", {}),
    "model-locked-down": (b"inputs: {x: {type: number}}\n", {
        "egress_policy": True, "api_keys_secret_name": "model-api-keys", "metrics_namespace": "monitoring",
        "default_cpu_limit": "1", "tls_secret_name": "models-tls", "ingress_class_name": "nginx",
        "model_wrapper_image": "registry.example.org/model-wrapper@sha256:" + "0" * 64}),
}
NO_REASON = "No comment provided"  # what checkov records for `checkov.io/skip1: CKV_K8S_11` without `=reason`


@dataclass(frozen=True)
class Scanned:
    """One scanned file's checks, as checkov reports them."""

    name: str
    passed: int
    failed: list[str]
    skipped: list[tuple[str, str, str]]
    """(check id, resource, reason)"""
    unparsed: bool = False
    """checkov could not read the file: nothing in it was checked."""

    def problems(self) -> list[str]:
        unexplained = [f"{self.name}: {check} skipped on {resource} without a reason (write "
                       f"`checkov.io/skipN: {check}=<why>`)" for check, resource, reason in self.skipped
                       if not reason.strip() or reason == NO_REASON]
        nothing = self.unparsed or not (self.passed or self.failed or self.skipped)
        unread = [f"{self.name}: checkov checked nothing in it (unparsed, or no Kubernetes object)"] if nothing else []
        return unread + [f"{self.name}: {failure}" for failure in self.failed] + unexplained


def checkov() -> Path:
    """checkov in its own virtualenv, made (or remade when requirements-checkov.txt changes) on first use."""
    stamp = VENV / f".installed-{hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]}"
    if not stamp.exists():
        if not (VENV / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
        for old in VENV.glob(".installed-*"):
            old.unlink()
        stamp.touch()
    return VENV / "bin" / "checkov"


def kustomize(directory: Path) -> str:
    """`kustomize build` of one kit directory, with kubectl's built-in kustomize or a kustomize binary."""
    if kubectl := shutil.which("kubectl"):
        command = [kubectl, "kustomize", str(directory)]
    elif binary := shutil.which("kustomize"):
        command = [binary, "build", str(directory)]
    else:
        raise SystemExit("make scan: needs kubectl (its built-in kustomize) or kustomize on PATH; on Debian: "
                         "apt-get install kubernetes-client")
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def rendered(contract: bytes, overrides: dict[str, Any]) -> str:
    """The manifests the watcher would apply for a model with this contract (the example's settings)."""
    from model_wrapper.contract.spec import parse_contract
    from watcher.config.settings import load_settings
    from watcher.render.manifests import Release, Renderer

    settings = load_settings(**{"mlflow_tracking_uri": "http://mlflow.mlops.svc:5000", "k8s_name_space": "models",
                                "mlflow_s3_endpoint_url": "http://minio.mlops.svc:9000",
                                "service_builder_host_name": "models.example.org", **overrides})
    release = Release(name="Iris Classifier", version=3, source="models:/m-0123456789abcdef", run_id="0123",
                      slug="iris-classifier", serving=parse_contract(contract).serving)
    return yaml.safe_dump_all(Renderer(settings).render(release).manifests, sort_keys=False)


def targets() -> dict[str, str]:
    """File name -> manifests: every rendered contract, then every kustomization."""
    found = {f"{name}.yaml": rendered(*contract) for name, contract in CONTRACTS.items()}
    found.update({directory.replace("/", "-") + ".yaml": kustomize(ROOT / directory) for directory in KUSTOMIZATIONS})
    return found


def scan(files: dict[str, str], scanner: Path | None = None) -> list[Scanned]:
    """Run checkov over the given manifests (name -> YAML text), one result per file."""
    with tempfile.TemporaryDirectory(prefix="scan-") as folder:
        for name, text in files.items():
            (Path(folder) / name).write_text(text)
        command = [str(scanner or checkov()), "--directory", folder, "--framework", "kubernetes", "--output", "json",
                   "--compact", "--skip-download", "--soft-fail"]
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=folder).stdout
    report = json.loads(out) if out.strip() else {}
    return [_per_file(name, report) for name in files]


def _per_file(name: str, report: dict[str, Any] | list[Any]) -> Scanned:
    results = (report[0] if isinstance(report, list) else report).get("results", {})

    def of(kind: str) -> list[dict[str, Any]]:
        return [r for r in results.get(kind, []) if r.get("file_path", "").lstrip("/") == name]

    return Scanned(name, passed=len(of("passed_checks")),
                   failed=[f"{r['check_id']} {r['check_name']} ({r['resource']})" for r in of("failed_checks")],
                   skipped=[(r["check_id"], r["resource"], (r.get("check_result") or {}).get("suppress_comment", ""))
                            for r in of("skipped_checks")],
                   unparsed=any(str(path).endswith("/" + name) for path in results.get("parsing_errors", [])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.scan", description=__doc__)
    parser.add_argument("--reasons", action="store_true", help="also list each skipped check with its reason")
    args = parser.parse_args(argv)
    results = scan(targets())
    print(f"{'scanned':<28} {'passed':>6} {'failed':>6} {'skipped':>7}")
    for result in results:
        print(f"{result.name:<28} {result.passed:>6} {len(result.failed):>6} {len(result.skipped):>7}")
        for check, resource, reason in result.skipped if args.reasons else []:
            print(f"    {check} on {resource}: {reason}")
    problems = [problem for result in results for problem in result.problems()]
    for problem in problems:
        print(f"FAILED {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
