"""Status: conditions decided from facts, timestamps kept until a flip, patches only on change."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

import pytest

from agentworker_operator import headroom, observation, status

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

NOW = datetime.datetime(2026, 11, 23, 10, 0, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(minutes=5)
SELECTOR = "app.kubernetes.io/instance=a,app.kubernetes.io/name=agent-worker"


def dep(**overrides: Any) -> status.DeploymentFacts:
    values: dict[str, Any] = {
        "generation": 2,
        "observed_generation": 2,
        "replicas": 3,
        "ready_replicas": 3,
        "updated_replicas": 3,
        "available_replicas": 3,
    }
    values.update(overrides)
    return status.DeploymentFacts(**values)


def facts(**overrides: Any) -> status.Facts:
    values: dict[str, Any] = {
        "generation": 4,
        "selector": SELECTOR,
        "desired_replicas": 3,
        "deployment": dep(),
    }
    values.update(overrides)
    return status.Facts(**values)


def conditions(f: status.Facts) -> dict[str, tuple[bool, str]]:
    return {c.type.value: (c.status, c.reason) for c in status.decide_conditions(f)}


def test_all_ready_is_ready_not_progressing_not_degraded() -> None:
    assert conditions(facts()) == {
        "Ready": (True, "WorkersReady"),
        "Progressing": (False, "RolloutComplete"),
        "Degraded": (False, "AsExpected"),
        "ScalingLimited": (False, "AutoscalingDisabled"),
        "FleetFull": (False, "WaitingForObservation"),
    }


@pytest.mark.parametrize(
    ("deployment", "reason"),
    [
        (None, "Creating"),
        (dep(observed_generation=1), "RollingOut"),
        (dep(updated_replicas=1, replicas=4), "RollingOut"),
        (dep(replicas=4, updated_replicas=3), "RollingOut"),
        (dep(ready_replicas=1), "ScalingUp"),
        (dep(replicas=5, updated_replicas=5, ready_replicas=5), "ScalingDown"),
    ],
    ids=[
        "no-deployment",
        "not-observed",
        "new-pods-coming",
        "old-pods-draining",
        "pods-starting",
        "scaling-down",
    ],
)
def test_rollout_in_flight_is_progressing_and_not_ready(
    deployment: status.DeploymentFacts | None, reason: str
) -> None:
    decided = conditions(facts(deployment=deployment))
    assert decided["Progressing"] == (True, reason)
    assert decided["Ready"] == (False, "WorkersNotReady")


@pytest.mark.parametrize("reason", ["InvalidSpec", "SecretNotFound", "SecretKeyMissing"])
def test_problem_is_degraded_and_not_ready_with_the_same_reason(reason: str) -> None:
    problem = status.Problem(reason=reason, message="what is wrong")
    decided = conditions(facts(problem=problem))
    assert decided["Degraded"] == (True, reason)
    assert decided["Ready"] == (False, reason)


def test_progress_deadline_exceeded_is_degraded_rollout_stuck() -> None:
    decided = conditions(facts(deployment=dep(ready_replicas=1, progress_deadline_exceeded=True)))
    assert decided["Degraded"] == (True, "RolloutStuck")


def test_autoscaling_before_the_first_observation_waits_for_it() -> None:
    assert conditions(facts(autoscaling_enabled=True))["ScalingLimited"] == (
        False,
        "WaitingForObservation",
    )


def test_a_limited_decision_makes_scaling_limited_true_with_its_reason() -> None:
    scaling = status.Scaling(limited=True, reason="AtMaxReplicas", message="12 wanted, max 10")
    decided = conditions(facts(autoscaling_enabled=True, scaling=scaling))
    assert decided["ScalingLimited"] == (True, "AtMaxReplicas")


def test_an_unlimited_decision_keeps_its_own_reason() -> None:
    scaling = status.Scaling(limited=False, reason="LoadAboveTarget", message="load 0.9")
    decided = conditions(facts(autoscaling_enabled=True, scaling=scaling))
    assert decided["ScalingLimited"] == (False, "LoadAboveTarget")


def test_autoscaling_off_says_what_holds_the_size() -> None:
    scaling = status.Scaling(
        limited=False,
        reason="AutoscalingDisabled",
        message="autoscaling is off: the fleet keeps its 3 workers until spec.replicas (1) changes",
    )
    decided = status.decide_conditions(facts(scaling=scaling))
    limited = next(c for c in decided if c.type is status.ConditionType.SCALING_LIMITED)
    assert (limited.status, limited.reason, limited.message) == (
        False,
        "AutoscalingDisabled",
        scaling.message,
    )


PAUSE = status.Scaling(
    limited=True,
    reason="Paused",
    message="spec.autoscaling.paused: no scale decision is made; the fleet keeps its 3 workers "
    "(a change of spec.replicas resizes it)",
)


def test_a_paused_fleet_is_scaling_limited_with_reason_paused() -> None:
    decided = conditions(facts(autoscaling_enabled=True, scaling=PAUSE))
    assert decided["ScalingLimited"] == (True, "Paused")


def test_a_pause_posts_one_event_when_it_starts_and_one_when_it_ends() -> None:
    stable = status.Scaling(limited=False, reason="Stable", message="load 0.30: 3 workers")
    before = status.desired_status(facts(autoscaling_enabled=True, scaling=stable), {}, now=NOW)
    paused = status.desired_status(facts(autoscaling_enabled=True, scaling=PAUSE), before, now=NOW)
    assert status.events_for(before, paused) == [
        status.Event(type="Normal", reason="Paused", message=PAUSE.message)
    ]
    still = status.desired_status(facts(autoscaling_enabled=True, scaling=PAUSE), paused, now=LATER)
    assert status.events_for(paused, still) == []
    resumed = status.desired_status(facts(autoscaling_enabled=True), still, now=LATER)
    assert status.events_for(still, resumed) == [
        status.Event(
            type="Normal",
            reason="Resumed",
            message="spec.autoscaling.paused is false: the autoscaler decides the replicas again",
        )
    ]


def test_turning_autoscaling_off_while_paused_posts_no_resumed_event() -> None:
    paused = status.desired_status(facts(autoscaling_enabled=True, scaling=PAUSE), {}, now=NOW)
    off = status.desired_status(facts(), paused, now=LATER)
    assert status.events_for(paused, off) == []


def test_desired_status_carries_counts_selector_and_generation() -> None:
    desired = status.desired_status(facts(deployment=dep(ready_replicas=2)), {}, now=NOW)
    assert desired["observedGeneration"] == 4
    assert desired["selector"] == SELECTOR
    assert (desired["replicas"], desired["readyReplicas"], desired["desiredReplicas"]) == (3, 2, 3)
    assert all(c["observedGeneration"] == 4 for c in desired["conditions"])
    assert all(c["lastTransitionTime"] == "2026-11-23T10:00:00Z" for c in desired["conditions"])


def test_transition_time_is_kept_until_the_status_flips() -> None:
    first = status.desired_status(facts(deployment=dep(ready_replicas=2)), {}, now=NOW)
    second = status.desired_status(facts(), first, now=LATER)
    by_type = {c["type"]: c for c in second["conditions"]}
    assert by_type["Ready"]["lastTransitionTime"] == "2026-11-23T10:05:00Z"
    assert by_type["Degraded"]["lastTransitionTime"] == "2026-11-23T10:00:00Z"


def test_unchanged_status_gives_no_patch() -> None:
    first = status.desired_status(facts(), {}, now=NOW)
    assert status.status_patch(first, status.desired_status(facts(), first, now=LATER)) is None


def test_patch_holds_only_changed_fields() -> None:
    first = status.desired_status(facts(), {}, now=NOW)
    second = status.desired_status(facts(deployment=dep(ready_replicas=2)), first, now=LATER)
    patch = status.status_patch(first, second)
    assert patch is not None
    assert set(patch) == {"readyReplicas", "conditions"}


def test_new_problem_posts_one_warning_event_and_repeats_post_none() -> None:
    problem = status.Problem(reason="SecretNotFound", message="Secret lk not found")
    first = status.desired_status(facts(problem=problem), {}, now=NOW)
    assert status.events_for({}, first) == [
        status.Event(type="Warning", reason="SecretNotFound", message="Secret lk not found")
    ]
    again = status.desired_status(facts(problem=problem), first, now=LATER)
    assert status.events_for(first, again) == []


def test_becoming_ready_posts_a_normal_event() -> None:
    starting = status.desired_status(facts(deployment=dep(ready_replicas=0)), {}, now=NOW)
    ready = status.desired_status(facts(), starting, now=LATER)
    assert status.events_for(starting, ready) == [
        status.Event(type="Normal", reason="WorkersReady", message="3/3 workers ready")
    ]


def test_unreachable_livekit_is_degraded_but_the_fleet_is_judged_on_its_own() -> None:
    decided = status.decide_conditions(
        facts(livekit_url="ws://lk:7880", livekit_error="ClientConnectorError: refused")
    )
    by_type = {c.type.value: c for c in decided}
    assert (by_type["Degraded"].status, by_type["Degraded"].reason) == (True, "LiveKitUnreachable")
    assert "ws://lk:7880" in by_type["Degraded"].message
    assert by_type["Ready"].status is True


def test_facts_from_deployment_reads_counts_and_the_progress_deadline() -> None:
    deployment = {
        "metadata": {"generation": 3},
        "status": {
            "observedGeneration": 3,
            "replicas": 2,
            "readyReplicas": 1,
            "updatedReplicas": 2,
            "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
        },
    }
    assert status.facts_from_deployment(deployment) == status.DeploymentFacts(
        generation=3,
        observed_generation=3,
        replicas=2,
        ready_replicas=1,
        updated_replicas=2,
        available_replicas=0,
        progress_deadline_exceeded=True,
    )
    assert status.facts_from_deployment(None) is None


def pod(name: str, reason: str, *, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-23T10:00:00Z"
    waiting = {"reason": reason, "message": "exit code 2"}
    return {"metadata": meta, "status": {"containerStatuses": [{"state": {"waiting": waiting}}]}}


def test_failures_from_pods_keeps_stuck_containers_of_live_pods() -> None:
    pods = [
        pod("b", "CrashLoopBackOff"),
        pod("a", "ImagePullBackOff"),
        pod("c", "ContainerCreating"),
        pod("d", "CrashLoopBackOff", deleting=True),
    ]
    assert [(f.pod, f.reason) for f in status.failures_from_pods(pods)] == [
        ("a", "ImagePullBackOff"),
        ("b", "CrashLoopBackOff"),
    ]


def test_a_stuck_init_container_or_sidecar_is_a_failing_worker() -> None:
    # the worker waits in PodInitializing behind a user's init container that cannot pull
    stuck = {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
    held = {"state": {"waiting": {"reason": "PodInitializing"}}}
    pod_status = {"initContainerStatuses": [stuck], "containerStatuses": [held]}
    blocked = {"metadata": {"name": "w"}, "status": pod_status}
    assert [(f.pod, f.reason) for f in status.failures_from_pods([blocked])] == [
        ("w", "ImagePullBackOff")
    ]


def test_failing_workers_are_degraded_naming_pod_and_reason() -> None:
    failing = (status.PodFailure(pod="w-1", reason="CrashLoopBackOff", message="exit code 2"),)
    decided = {c.type.value: c for c in status.decide_conditions(facts(failing_pods=failing))}
    assert decided["Degraded"].reason == "WorkersFailing"
    assert "w-1: CrashLoopBackOff (exit code 2)" in decided["Degraded"].message


def summary(**counts: int) -> observation.FleetSummary:
    by_state = dict.fromkeys(observation.WorkerState, 0)
    for state, count in counts.items():
        by_state[observation.WorkerState(state)] = count
    return observation.FleetSummary(
        by_state=by_state, active_jobs=7, load=0.456, unknown_pods=("p-1",), old_worker_jobs=2
    )


def test_the_workers_reports_fill_the_status_and_columns() -> None:
    desired = status.desired_status(
        facts(
            fleet=summary(available=2, full=1, unknown=1), last_scale_time="2026-11-23T09:00:00Z"
        ),
        {},
        now=NOW,
    )
    assert (desired["activeJobs"], desired["load"]) == (7, 0.46)
    assert (desired["available"], desired["full"], desired["unknown"]) == (2, 1, 1)
    assert desired["unknownWorkers"] == ["p-1"]
    assert desired["oldWorkerJobs"] == 2
    assert desired["lastScaleTime"] == "2026-11-23T09:00:00Z"


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        pytest.param({"available": 1, "full": 3}, (False, "WorkersAvailable"), id="one-free"),
        pytest.param({"full": 2, "starting": 1}, (False, "WorkersStarting"), id="coming"),
        pytest.param({"full": 2, "draining": 1}, (True, "NoAvailableWorker"), id="full"),
        pytest.param({}, (True, "NoAvailableWorker"), id="empty"),
    ],
)
def test_fleet_full_when_no_worker_takes_a_call(
    counts: dict[str, int], expected: tuple[bool, str]
) -> None:
    assert conditions(facts(fleet=summary(**counts)))["FleetFull"] == expected


def test_a_fleet_at_zero_with_the_guard_is_not_full_and_a_full_one_says_calls_are_held() -> None:
    asleep = facts(fleet=summary(), desired_replicas=0, pending_dispatches=0)
    assert conditions(asleep)["FleetFull"] == (False, "ScaledToZero")
    waking = facts(fleet=summary(), desired_replicas=1, pending_dispatches=1)
    assert conditions(waking)["FleetFull"] == (True, "NoAvailableWorker")
    full = status.decide_conditions(facts(fleet=summary(full=2), pending_dispatches=3))
    (message,) = [c.message for c in full if c.type is status.ConditionType.FLEET_FULL]
    assert "the dispatch guard holds them (3 waiting)" in message
    unguarded = status.decide_conditions(facts(fleet=summary(full=2)))
    (message,) = [c.message for c in unguarded if c.type is status.ConditionType.FLEET_FULL]
    assert "drops such dispatches" in message


def test_a_full_fleet_posts_a_warning_once() -> None:
    first = status.desired_status(facts(fleet=summary(full=2)), {}, now=NOW)
    events = status.events_for({}, first)
    assert [(e.type, e.reason) for e in events if e.reason == "NoAvailableWorker"] == [
        ("Warning", "NoAvailableWorker")
    ]
    again = status.desired_status(facts(fleet=summary(full=2)), first, now=LATER)
    assert not [e for e in status.events_for(first, again) if e.reason == "NoAvailableWorker"]


def test_an_unreachable_livekit_is_a_problem_only_while_no_worker_is_registered() -> None:
    unreachable = {"livekit_url": "wss://lk", "livekit_error": "no answer within 3s"}
    assert conditions(facts(**unreachable))["Degraded"] == (True, "LiveKitUnreachable")
    registered = facts(**unreachable, fleet=summary(available=1))
    assert conditions(registered)["Degraded"] == (False, "AsExpected")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ('secret "lk" not found', "SecretNotFound"),
        ("couldn't find key LIVEKIT_API_SECRET in Secret team-a/lk", "SecretKeyMissing"),
        ('secret "other" not found', "WorkersFailing"),  # some other Secret: the pod's message
        ("couldn't find key token in Secret team-a/support-control", "WorkersFailing"),
    ],
)
def test_the_kubelets_word_on_the_credentials_secret_names_it_in_degraded(
    message: str, reason: str
) -> None:  # fmt: skip
    failing = status.PodFailure(pod="w-1", reason="CreateContainerConfigError", message=message)
    f = facts(failing_pods=(failing,), credentials_secret="lk")
    assert conditions(f)["Degraded"] == (True, reason)
    problem = status.desired_status(f, {}, now=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    degraded = next(c for c in problem["conditions"] if c["type"] == "Degraded")
    assert message in degraded["message"]


def test_a_fleet_that_cannot_be_read_is_degraded_naming_pods_and_errors() -> None:
    silent = observation.observe(
        {
            "metadata": {"name": "w1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
        None,
        "no answer within 2s",
        load_threshold=0.7,
    )
    summary = observation.summarize([silent], template_hash="")
    found = status.decide_conditions(facts(fleet=summary))
    degraded = next(c for c in found if c.type is status.ConditionType.DEGRADED)
    assert (degraded.status, degraded.reason) == (True, "WorkersUnreadable")
    assert "w1: no answer within 2s" in degraded.message


WARM = headroom.WarmHeadroom(
    warm_workers=3,
    free_slots=8,
    arrival_rate_per_s=0.123456,
    reaction_s=64.6,
    miss_rate=0.001,
    slots_per_worker=3,
    busy_calls=12,
    mean_call_s=181.4,
)


def test_the_warm_headroom_of_a_miss_rate_target_shows_the_number_and_its_inputs() -> None:
    shown = status.desired_status(facts(warm_headroom=WARM), {}, now=NOW)["warmHeadroom"]
    assert shown == {
        "workers": 3,
        "freeSlots": 8,
        "slotsPerWorker": 3,
        "arrivalsPerMinute": 7.41,
        "reactionSeconds": 65,
        "busyCalls": 12,
        "missRate": 0.001,
        "capped": False,
        "meanCallSeconds": 181,
    }


def test_without_a_miss_rate_target_the_warm_headroom_is_removed() -> None:
    before = status.desired_status(facts(warm_headroom=WARM), {}, now=NOW)
    after = status.desired_status(facts(), before, now=LATER)
    patch = status.status_patch(before, after)
    assert patch is not None
    assert patch["warmHeadroom"] is None


def test_a_drift_smaller_than_the_rounding_writes_no_status() -> None:
    first = status.desired_status(facts(warm_headroom=WARM), {}, now=NOW)
    drifted = replace(WARM, arrival_rate_per_s=0.12346, reaction_s=64.7)
    again = status.desired_status(facts(warm_headroom=drifted), first, now=LATER)
    assert status.status_patch(first, again) is None


def test_a_key_an_object_field_no_longer_has_is_removed_by_the_patch() -> None:
    # a merge patch merges objects: the mean call length that went unknown must be sent as null
    first = status.desired_status(facts(warm_headroom=WARM), {}, now=NOW)
    unknown = replace(WARM, mean_call_s=None)
    patch = status.status_patch(
        first, status.desired_status(facts(warm_headroom=unknown), first, now=LATER)
    )
    assert patch is not None
    assert patch["warmHeadroom"]["meanCallSeconds"] is None
    assert patch["warmHeadroom"]["workers"] == 3
