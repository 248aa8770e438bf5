"""Table tests of the pure `plan()`: every lifecycle case as plain data in, actions out, no I/O.

The slug, spec-hash and attempt-key functions are passed in, so each case states exactly what
"changed" means for it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from watcher.decide.plan import Clash, Deploy, Plan, RecordDeployed, RollBack, Supersede, Undeploy, plan
from watcher.decide.retry import Retrying, retry_delay
from watcher.decide.types import ATTEMPT, KINDS, STATUS, Live, VersionInfo

HASH = "h-current"
ATTEMPT_KEY = "attempt-1"
DEPLOYED = {STATUS: "deployed", "deployment_name": "iris", "deployed": "true"}


def version(name: str = "iris", number: int = 1, **tags: str) -> VersionInfo:
    return VersionInfo(name=name, version=number, source=f"models:/m-{name}-{number}", run_id="run", tags=dict(tags))


def deployed(name: str = "iris", number: int = 1) -> VersionInfo:
    return version(name, number, **{**DEPLOYED, "deployment_name": name})


def live(name: str = "iris", number: int | None = 1, *, slug: str | None = None, spec_hash: str = HASH,
         kinds: frozenset[str] = KINDS, managed: bool = True) -> Live:
    return Live(slug=slug or name, model=name if managed else "", version=number, spec_hash=spec_hash,
                kinds=kinds, managed=managed)


def decide(selected: list[VersionInfo], running: list[Live], *, slugs: Mapping[str, str] | None = None,
           spec_hash: str = HASH, attempt: str = ATTEMPT_KEY, now: datetime | None = None,
           eager: Collection[str] = ()) -> Plan:
    slug_of: Callable[[str], str] = lambda name: (slugs or {}).get(name, name)  # noqa: E731
    return plan(selected, running, slug_of=slug_of, spec_hash_of=lambda v, item: spec_hash,
                attempt_of=lambda v: attempt, now=now, eager=eager)


def kinds_of(result: Plan) -> list[str]:
    return [type(action).__name__ for action in result.actions]


# --- deploy, update, supersede -----------------------------------------------------------------


def test_newly_selected_model_is_deployed() -> None:
    result = decide([version()], [])
    assert result.actions == (Deploy(version(), "iris", "new"),)
    assert result.found == 1 and result.unchanged == ()


def test_new_version_of_a_served_model_updates_the_same_deployment() -> None:
    served = live(number=1)
    result = decide([version(number=2)], [served])
    assert result.actions == (Deploy(version(number=2), "iris", "update", served),)


def test_old_version_still_selected_is_superseded_only_after_the_new_one_is_ready() -> None:
    # v1 serves and is still tagged: superseding it now would lie if v2 then failed to roll out,
    # so the plan leaves it to the Deploy, which supersedes the previous version once v2 is ready.
    served = live(number=1)
    result = decide([deployed(number=1), version(number=2)], [served])
    assert result.actions == (Deploy(version(number=2), "iris", "update", served),)


def test_several_selected_versions_deploy_the_highest_and_supersede_the_others() -> None:
    result = decide([version(number=1), version(number=3), version(number=2)], [])
    assert kinds_of(result) == ["Supersede", "Supersede", "Deploy"]
    assert {(a.version.version, a.winner) for a in result.actions if isinstance(a, Supersede)} == {(1, 3), (2, 3)}
    deploy = result.actions[-1]
    assert isinstance(deploy, Deploy) and deploy.version.version == 3 and deploy.reason == "new"


def test_versions_already_tagged_superseded_are_not_tagged_again() -> None:
    result = decide([version(number=1, **{STATUS: "superseded"}), deployed(number=2)], [live(number=2)])
    assert result.actions == ()
    assert result.unchanged == ("iris v2",)


def test_a_selected_loser_left_deployed_by_an_interrupted_pass_is_superseded() -> None:
    result = decide([deployed(number=1), deployed(number=2)], [live(number=2)])
    assert result.actions == (Supersede(deployed(number=1), 2),)


def test_old_version_keeps_its_tags_while_the_new_one_has_failed() -> None:
    failed = version(number=2, **{STATUS: "failed", ATTEMPT: ATTEMPT_KEY})
    result = decide([deployed(number=1), failed], [live(number=1)])
    assert result.actions == ()
    assert result.unchanged == ("iris v2",)


# --- nothing changed ---------------------------------------------------------------------------


def test_nothing_changed_gives_no_action_at_all() -> None:
    result = decide([deployed()], [live()])
    assert result.actions == ()
    assert result.unchanged == ("iris v1",)


def test_stale_tags_on_the_running_version_are_recorded_without_a_rollout() -> None:
    served = live()
    for tags in ({}, {STATUS: "deploying"}, {**DEPLOYED, "deployment_name": "old-name"}):
        stale = version(**tags)
        assert decide([stale], [served]).actions == (RecordDeployed(stale, served),)


# --- undeploy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["tag removed", "version deleted", "model deleted"])
def test_model_with_no_selected_version_is_undeployed(case: str) -> None:
    # The three cases look the same to the plan: the model has nothing selected any more.
    served = live("iris")
    result = decide([deployed("other")], [served, live("other")])
    assert result.actions == (Undeploy(served),)


def test_undeploy_never_touches_unmanaged_objects() -> None:
    result = decide([], [live("handmade", managed=False), live("iris")])
    assert result.actions == (Undeploy(live("iris")),)


def test_managed_objects_without_model_annotation_are_cleaned_up() -> None:
    orphan = Live(slug="orphan", model="", version=None, kinds=frozenset({"Service"}))
    assert decide([], [orphan]).actions == (Undeploy(orphan),)


def test_objects_left_under_an_old_name_are_removed_without_tagging_the_model_undeployed() -> None:
    # The model's slug moved (say, a naming rule changed): it is deployed under the new name, and
    # the objects under the old one go, but the version that now serves must not read "undeployed".
    old = live("iris", slug="iris-old-name")
    result = decide([version()], [old])
    assert result.actions == (Deploy(version(), "iris", "new"), Undeploy(old, retag=False))


# --- reconfigure, repair -----------------------------------------------------------------------


def test_template_or_setting_change_reapplies_without_touching_tags() -> None:
    served = live(spec_hash="h-before-image-change")
    result = decide([deployed()], [served], spec_hash="h-after-image-change")
    assert result.actions == (Deploy(deployed(), "iris", "reconfigure", served),)


def test_missing_kind_is_repaired() -> None:
    served = live(kinds=frozenset({"Deployment", "Service"}))
    result = decide([deployed()], [served])
    assert result.actions == (Deploy(deployed(), "iris", "repair", served),)


# --- clashes -----------------------------------------------------------------------------------


def test_unmanaged_objects_with_the_same_name_are_a_clash_and_never_touched() -> None:
    result = decide([version()], [live("iris", managed=False)])
    assert kinds_of(result) == ["Clash"]
    clash = result.actions[0]
    assert isinstance(clash, Clash) and "not managed by Service Builder" in clash.message


def test_name_used_by_another_models_objects_is_a_clash() -> None:
    result = decide([version("Iris")], [live("other-model", slug="iris")], slugs={"Iris": "iris"})
    assert kinds_of(result) == ["Clash"]
    clash = result.actions[0]
    assert isinstance(clash, Clash) and "'other-model'" in clash.message


def test_two_new_names_with_one_slug_deploy_one_and_report_the_other() -> None:
    result = decide([version("a"), version("b")], [], slugs={"a": "same", "b": "same"})
    assert kinds_of(result) == ["Deploy", "Clash"]
    assert isinstance(result.actions[1], Clash) and result.actions[1].version.name == "b"


def test_the_model_already_served_keeps_its_slug_against_a_newcomer() -> None:
    # "b" sorts after "a", yet it keeps the name it already serves under; only "a" is reported.
    served_b = version("b", **{**DEPLOYED, "deployment_name": "same"})
    result = decide([version("a"), served_b], [live("b", slug="same")], slugs={"a": "same", "b": "same"})
    assert kinds_of(result) == ["Clash"]
    clash = result.actions[0]
    assert isinstance(clash, Clash) and clash.version.name == "a" and "'b'" in clash.message
    assert result.unchanged == ("b v1",)


# --- failures ----------------------------------------------------------------------------------


def test_failed_version_with_the_same_inputs_is_not_retried() -> None:
    failed = version(**{STATUS: "failed", ATTEMPT: ATTEMPT_KEY})
    result = decide([failed], [])
    assert result.actions == ()
    assert result.unchanged == ("iris v1",)


def test_failed_version_is_retried_when_its_inputs_change() -> None:
    failed = version(**{STATUS: "failed", ATTEMPT: ATTEMPT_KEY})
    result = decide([failed], [], attempt="attempt-2-new-image")
    assert result.actions == (Deploy(failed, "iris", "new"),)


def test_transient_failure_without_an_attempt_key_is_retried() -> None:
    failed = version(**{STATUS: "failed", ATTEMPT: ""})
    assert kinds_of(decide([failed], [])) == ["Deploy"]


def test_failed_model_keeps_its_running_objects() -> None:
    failed = version(number=2, **{STATUS: "failed", ATTEMPT: ATTEMPT_KEY})
    assert decide([failed], [live(number=1)]).actions == ()


# --- a failure the cluster caused: retried later, with a growing pause ------------------------

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
PAUSED = f"{ATTEMPT_KEY} failures=3 retry_after=2026-12-02T04:02:00Z"


def pausing(number: int = 1, record: str = PAUSED) -> VersionInfo:
    return version(number=number, **{STATUS: "failed", ATTEMPT: record})


@pytest.mark.parametrize(("case", "record", "kwargs", "retried"), [
    ("during its pause", PAUSED, {"now": NOW}, False),
    ("a second before its end", PAUSED, {"now": NOW + timedelta(seconds=119)}, False),
    ("once its pause is over", PAUSED, {"now": NOW + timedelta(seconds=120)}, True),
    ("a clock without a zone, read as UTC", PAUSED, {"now": datetime(2026, 12, 2, 4, 1)}, False),
    ("after its inputs changed", PAUSED, {"now": NOW, "attempt": "attempt-2-new-image"}, True),
    ("when a webhook or a person asks for the model", PAUSED, {"now": NOW, "eager": {"iris"}}, True),
    ("only the model asked for", PAUSED, {"now": NOW, "eager": {"other"}}, False),
    ("after a first failure (no pause yet)", f"{ATTEMPT_KEY} failures=1", {"now": NOW}, True),
    ("with no clock to measure the pause by", PAUSED, {}, True),
    ("with a record edited by hand", f"{ATTEMPT_KEY} failures=x retry_after=2026-12-02T04:02:00Z", {"now": NOW},
     True),
    ("with a time that does not parse", f"{ATTEMPT_KEY} failures=3 retry_after=soon", {"now": NOW}, True),
    ("with an unknown field", f"{ATTEMPT_KEY} failures=3 retry_after=2026-12-02T04:02:00Z x=1", {"now": NOW},
     True),
])
def test_a_version_the_cluster_failed_waits_out_its_pause_unless_something_changed(
        case: str, record: str, kwargs: dict[str, object], retried: bool) -> None:
    result = decide([pausing(record=record)], [], **kwargs)  # type: ignore[arg-type]
    assert kinds_of(result) == (["Deploy"] if retried else []), case
    assert result.unchanged == (() if retried else ("iris v1",)), case


def test_a_paused_update_leaves_the_version_that_serves_alone() -> None:
    assert decide([deployed(number=1), pausing(number=2)], [live(number=1)], now=NOW).actions == ()


def test_a_paused_update_whose_roll_back_was_cut_short_is_rolled_back_during_the_pause() -> None:
    stuck = Live(slug="iris", model="iris", version=2, spec_hash=HASH, rollback_to=1)
    result = decide([deployed(number=1), pausing(number=2)], [stuck], now=NOW)
    assert result.actions == (RollBack(pausing(number=2), stuck),)


def test_a_paused_version_that_is_no_longer_selected_is_still_undeployed() -> None:
    assert kinds_of(decide([], [live(number=1)], now=NOW)) == ["Undeploy"]


def test_the_pause_is_none_after_one_failure_then_doubles_from_a_minute_up_to_the_cap() -> None:
    assert [retry_delay(n, cap=1800) for n in range(1, 9)] == [0, 60, 120, 240, 480, 960, 1800, 1800]
    assert retry_delay(10_000, cap=600) == 600


def test_each_failure_in_a_row_counts_and_new_inputs_count_anew() -> None:
    first = Retrying("k1", 0).next("k1", NOW, cap=1800)
    assert first == Retrying("k1", 1) and str(first) == "k1 failures=1"
    third = first.next("k1", NOW, 1800).next("k1", NOW, 1800)
    assert third == Retrying("k1", 3, NOW + timedelta(seconds=120))
    assert str(third) == "k1 failures=3 retry_after=2026-12-02T04:02:00Z"
    assert Retrying.parse(str(third)) == third
    assert third.next("k2", NOW, 1800) == Retrying("k2", 1)


@pytest.mark.parametrize("text", ["", ATTEMPT_KEY, "k failures=", "k failures=-1", "k retry_after=2026-12-02",
                                  "k failures=1 failures=2 x", "k failures=1 retry_after=2026-13-40T00:00:00Z"])
def test_what_is_not_a_retry_record_parses_as_none(text: str) -> None:
    assert Retrying.parse(text) is None


# --- a roll-back cut short ---------------------------------------------------------------------


def test_a_failed_update_still_in_the_template_is_rolled_back_to_the_version_it_replaced() -> None:
    failed = version(number=2, **{STATUS: "failed", ATTEMPT: ATTEMPT_KEY})
    stuck = Live(slug="iris", model="iris", version=2, spec_hash=HASH, rollback_to=1)

    result = decide([deployed(number=1), failed], [stuck])

    assert result.actions == (RollBack(failed, stuck),)  # and no Supersede: version 1's pods still serve


def test_an_update_still_rolling_out_is_not_rolled_back() -> None:
    rolling = version(number=2, **{STATUS: "deploying"})
    live_now = Live(slug="iris", model="iris", version=2, spec_hash=HASH, rollback_to=1)

    assert kinds_of(decide([rolling], [live_now])) == ["RecordDeployed"]
