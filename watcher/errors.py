"""The watcher's own error tree. Client modules translate MLflow, boto3 and Kubernetes errors into these.

`Retryable` failures are worth another try on the next pass; `Permanent` ones need a person to
change something (the message says what). `PassAborted` means the pass itself cannot run.
"""

from __future__ import annotations


class ServiceBuilderError(Exception):
    """Base of every error the watcher raises on purpose; the message is safe to show and tag."""


class Retryable(ServiceBuilderError):
    """A transient fault (network, 5xx, conflict): the next pass tries again."""


class Permanent(ServiceBuilderError):
    """Something a person must fix (bad contract, missing permission, name clash)."""


class Blocked(Permanent):
    """A person must fix something outside the model version (a permission, a credential, a clashing
    object): recorded as failed, yet tried again every pass, so the fix works without re-tagging."""


class VersionGone(Permanent):
    """The version (or its whole model) no longer exists."""


class EvaluationFailed(Permanent):
    """The version scored below what its contract requires; the live version keeps serving."""


class ContractInvalid(Permanent):
    """The model's contract is missing or unusable."""


class RolloutFailed(Permanent):
    """The new version never became ready; the previous one keeps serving."""


class CandidateRejected(Permanent):
    """The candidate's figures on live traffic broke a bound of its contract's `rollout` section (or a person
    aborted it): it was removed, and the live version served throughout."""


class PassAborted(ServiceBuilderError):
    """The registry or the cluster cannot be reached: the pass cannot run at all."""


class Busy(ServiceBuilderError):
    """Another watcher holds the lease: this pass leaves the work to it."""


class LeaseLost(PassAborted):
    """The lease could not be renewed: another watcher may act now, so this pass writes nothing more."""


class SettingsInvalid(ServiceBuilderError):
    """An environment variable has a value the watcher cannot use."""


class Rejected(Exception):
    """A delivery the receiver refuses; carries its HTTP status and the metric outcome."""

    def __init__(self, status: int, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.outcome, self.reason = status, outcome, reason


class Stopping(BaseException):
    """The process was asked to stop while waiting (e.g. for a rollout): the step in progress unwinds.

    A BaseException, so no `except Exception` records it as a model failure, while the roll-back
    around an apply (which catches BaseException) still puts back what ran before.
    """
