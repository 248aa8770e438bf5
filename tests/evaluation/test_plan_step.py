"""Where the evaluate step sits in the plan: which actions pass a version through the gate, and
which states never do (steady state, a remembered refusal), as plain data in, actions out."""

from __future__ import annotations

import pytest

from tests.reconcile.test_plan import ATTEMPT_KEY, DEPLOYED, decide, live, version
from watcher.decide.plan import Deploy, Plan
from watcher.decide.types import ATTEMPT, STATUS, Live, VersionInfo

PASSED = {"evaluation_status": "passed", "evaluation_digest": "d-1", "evaluation_summary": "accuracy=0.97"}
REFUSED = {STATUS: "failed", ATTEMPT: ATTEMPT_KEY, "evaluation_status": "failed",
           "deployment_message": "evaluation failed: accuracy 0.293 < 0.900 required (evaluation.csv, 150 rows)"}


def gated(result: Plan) -> list[tuple[str, str, bool]]:
    """(action, reason, evaluated first) for every action of the plan."""
    return [(type(a).__name__, getattr(a, "reason", ""), isinstance(a, Deploy) and a.evaluates) for a in result.actions]


@pytest.mark.parametrize(("selected", "running", "spec_hash", "expected"), [
    # a first version, and a new one replacing what serves: evaluated before they take traffic
    ([version()], [], "h-current", [("Deploy", "new", True)]),
    ([version(number=2)], [live()], "h-current", [("Deploy", "update", True)]),
    # a pass killed while evaluating left the tag behind: the next one evaluates again
    ([version(**{STATUS: "evaluating"})], [], "h-current", [("Deploy", "new", True)]),
    # the version already serving is reconfigured or repaired without asking the gate again
    ([version(**DEPLOYED, **PASSED)], [live()], "h-new", [("Deploy", "reconfigure", False)]),
    ([version(**DEPLOYED, **PASSED)], [live(kinds=frozenset({"Deployment"}))], "h-current",
     [("Deploy", "repair", False)]),
    # steady state: nothing at all, so nothing is evaluated
    ([version(**DEPLOYED, **PASSED)], [live()], "h-current", []),
    # a refused version is not evaluated again until its inputs change, and v1 keeps serving
    ([version(number=2, **REFUSED)], [live()], "h-current", []),
    # a version that passed and was untagged, then tagged again: deployed anew (the gate remembers it passed)
    ([version(**{**PASSED, STATUS: "undeployed"})], [], "h-current", [("Deploy", "new", True)]),
])
def test_only_a_version_about_to_take_traffic_is_evaluated(
    selected: list[VersionInfo], running: list[Live], spec_hash: str, expected: list[tuple[str, str, bool]],
) -> None:
    assert gated(decide(selected, running, spec_hash=spec_hash)) == expected


def test_a_refused_version_is_evaluated_again_once_its_inputs_change() -> None:
    assert gated(decide([version(number=2, **REFUSED)], [live()], attempt="attempt-2")) == [("Deploy", "update", True)]
