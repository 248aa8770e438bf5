"""The scanner checks a model Deployment fails on purpose, as checkov skip annotations with the reason.

Called by `render` for each Deployment. A reviewer reads the reason on the object itself, and
`make scan` (devstack/scan.py) fails CI on any failed check, or skipped one, without one.
Reasons contain no `=`: checkov splits the annotation's value at it.
"""

from __future__ import annotations


def scanner_exemptions(resources: dict[str, dict[str, str]], image: str) -> dict[str, str]:
    """`checkov.io/skipN: CHECK=reason` annotations for a Deployment with these resources and image."""
    skips = dict(ALWAYS_EXEMPT)
    if "cpu" not in resources["limits"]:
        skips["CKV_K8S_11"] = ("no CPU limit by default, since CFS throttling slows inference at any load; "
                               "DEFAULT_CPU_LIMIT or the contract's serving.resources.limits.cpu sets one")
    if "@sha256:" not in image:
        skips["CKV_K8S_43"] = "MODEL_WRAPPER_IMAGE is a tag here; it accepts a digest (IMAGE@sha256:...) to pin one"
    return {f"checkov.io/skip{i}": f"{check}={reason}" for i, (check, reason) in enumerate(sorted(skips.items()), 1)}


ALWAYS_EXEMPT = {
    "CKV_K8S_15": "IfNotPresent: the Deployment changes when the image does (spec hash), and a digest cannot change",
    "CKV_K8S_35": "only the optional MLFLOW_TRACKING_TOKEN, which MLflow reads from its environment alone; "
                  "S3 keys, MLflow's user and password and the API keys are mounted files",
}
