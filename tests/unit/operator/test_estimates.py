"""The miss-rate headroom's inputs, fed round by round: job starts, call lengths, scale-ups'
reaction times, and the warm headroom derived from them for a spec."""

from __future__ import annotations

from typing import Any

import pytest

from agentworker_operator import estimates, headroom, observation
from agentworker_operator import spec as specs
from agentworker_operator.observation import WorkerState
from tests.unit.operator.workers import worker

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

FRESH = estimates.Estimates()


def busy(name: str, *ids: str, restarts: int = 0) -> observation.Worker:
    """A registered worker of this runtime listing the jobs `ids`."""
    return worker(name, load=0.2 * len(ids), job_ids=ids, restarts=restarts)


def official(name: str, jobs: int) -> observation.Worker:
    """A registered official livekit-agents worker: a count of jobs, no list."""
    return worker(name, load=0.2 * jobs, jobs=jobs)


def rounds(
    *seen: list[observation.Worker], every_s: float = 10.0, desired: int | None = None
) -> estimates.Estimates:
    """The estimates after one round per list of workers, `every_s` apart from 0."""
    fed = FRESH
    for number, workers in enumerate(seen):
        fed = fed.observed(workers, now_s=number * every_s, desired=desired)
    return fed


def counted(*starts: int, every_s: float = 10.0) -> headroom.ArrivalRate:
    """The arrival rate fed these starts, one round each, `every_s` apart from 0."""
    rate = headroom.ArrivalRate()
    for number, count in enumerate(starts):
        rate = rate.observed(number * every_s, count)
    return rate


def autoscaling(**raw: Any) -> specs.Autoscaling:
    return specs.parse_spec(
        {
            "image": "agent:1",
            "entrypoint": "agent:main",
            "livekit": {"url": "ws://lk:7880", "credentialsSecret": {"name": "lk"}},
            "autoscaling": {"enabled": True, **raw},
        }
    ).autoscaling


# -- job starts --------------------------------------------------------------------------------


def test_new_job_ids_on_a_worker_read_before_are_starts() -> None:
    fed = rounds([busy("w0", "AJ_1")], [busy("w0", "AJ_1", "AJ_2", "AJ_3")])
    assert fed.arrivals == counted(0, 2)
    assert fed.arrivals.per_s == pytest.approx(2 / 10)
    assert set(fed.jobs) == {"AJ_1", "AJ_2", "AJ_3"}


def test_an_operator_that_starts_counts_the_calls_already_on_as_no_starts() -> None:
    fed = rounds([busy("w0", "AJ_1", "AJ_2")], [busy("w0", "AJ_1", "AJ_2")])
    assert fed.arrivals == counted(0, 0)


def test_a_worker_read_for_the_first_time_brings_no_starts() -> None:
    # unreadable when the operator started: its calls were on before anyone could see them
    unreadable = worker("w0", state=WorkerState.UNKNOWN)
    fed = rounds([busy("w1")], [busy("w1"), unreadable], [busy("w1"), busy("w0", "AJ_1", "AJ_2")])
    assert fed.arrivals == counted(0, 0, 0)


def test_the_first_jobs_of_a_worker_seen_starting_are_starts() -> None:
    starting = worker("w1", state=WorkerState.STARTING, ready=False)
    fed = rounds([busy("w0"), starting], [busy("w0"), busy("w1", "AJ_9")])
    assert fed.arrivals == counted(0, 1)


def test_a_worker_unreadable_for_a_while_keeps_its_jobs_and_shows_the_new_ones_after() -> None:
    silent = worker("w0", state=WorkerState.UNKNOWN)
    fed = rounds([busy("w0", "AJ_1")], [silent], [busy("w0", "AJ_1", "AJ_2")])
    assert fed.arrivals == counted(0, 0, 1)
    assert fed.lengths.samples_s == ()  # AJ_1 is on: it did not end while unread


def test_a_worker_without_a_job_list_counts_the_rise_of_its_jobs() -> None:
    fed = rounds([official("w0", 1)], [official("w0", 3)], [official("w0", 2)], [official("w0", 4)])
    assert fed.arrivals == counted(0, 2, 0, 2)


def test_the_jobs_kept_are_those_the_live_workers_list() -> None:
    fed = rounds([busy("w0", "AJ_1"), busy("w1", "AJ_2")], [busy("w0", "AJ_3")])
    assert set(fed.jobs) == {"AJ_3"}
    assert set(fed.pods) == {"w0"}


# -- call lengths ------------------------------------------------------------------------------


def test_a_call_that_ends_lasts_from_the_round_it_was_first_seen_to_the_round_it_is_gone() -> None:
    fed = rounds(
        [busy("w0")], [busy("w0", "AJ_1")], [busy("w0", "AJ_1")], [busy("w0")], every_s=5.0
    )
    assert fed.lengths.samples_s == (10.0,)


def test_calls_on_when_the_operator_started_have_no_known_length() -> None:
    fed = rounds([busy("w0", "AJ_1")], [busy("w0")])
    assert fed.lengths.samples_s == ()


@pytest.mark.parametrize(
    "after",
    [
        pytest.param([], id="worker-gone"),
        pytest.param([busy("w0", restarts=1)], id="container-restarted"),
    ],
)
def test_calls_of_a_worker_that_died_are_lost_not_ended(after: list[observation.Worker]) -> None:
    fed = rounds([busy("w0")], [busy("w0", "AJ_1")], after)
    assert fed.lengths.samples_s == ()


def test_the_mean_call_length_is_known_once_twenty_calls_ended_and_follows_the_latest_100() -> None:
    lengths = estimates.CallLengths()
    for _ in range(19):
        lengths = lengths.ended(60.0)
    assert lengths.mean_s is None
    lengths = lengths.ended(60.0)
    assert lengths.mean_s == 60.0
    for _ in range(100):
        lengths = lengths.ended(180.0)
    assert lengths.mean_s == 180.0
    assert len(lengths.samples_s) == 100


# -- reaction time -----------------------------------------------------------------------------


def test_a_scale_up_is_measured_from_its_round_to_the_round_its_worker_registered() -> None:
    fed = FRESH.observed([busy("w0")], now_s=100.0, desired=1)
    fed = fed.scaled_up(at_s=100.0, added=1, pods=["w0"])
    starting = worker("w1", state=WorkerState.STARTING, ready=False)
    fed = fed.observed([busy("w0"), starting], now_s=110.0, desired=2)
    assert fed.waiting_s(115.0) == 15.0
    fed = fed.observed([busy("w0"), busy("w1")], now_s=130.0, desired=2)
    assert fed.reaction.samples_s == (30.0,)
    assert fed.scale_ups == ()
    assert fed.waiting_s(200.0) == 0.0


def test_a_pod_older_than_the_scale_up_is_not_its_worker() -> None:
    old = worker("w1", state=WorkerState.STARTING, ready=False)
    fed = FRESH.observed([busy("w0"), old], now_s=100.0, desired=2)
    fed = fed.scaled_up(at_s=100.0, added=1, pods=["w0", "w1"])
    fed = fed.observed([busy("w0"), busy("w1")], now_s=110.0, desired=3)
    assert fed.reaction.samples_s == ()
    fed = fed.observed([busy("w0"), busy("w1"), busy("w2")], now_s=140.0, desired=3)
    assert fed.reaction.samples_s == (40.0,)


def test_a_worker_that_registers_again_is_no_new_worker() -> None:
    fed = rounds([busy("w0")], desired=1).scaled_up(at_s=0.0, added=1, pods=["w0"])
    fed = fed.observed([worker("w0", state=WorkerState.UNKNOWN)], now_s=10.0, desired=2)
    fed = fed.observed([busy("w0")], now_s=20.0, desired=2)
    assert fed.reaction.samples_s == ()
    assert fed.scale_ups[0].awaited == 1


def test_a_scale_down_before_the_new_workers_registered_stops_awaiting_them() -> None:
    fed = rounds([busy("w0")], desired=1).scaled_up(at_s=0.0, added=3, pods=["w0"])
    fed = fed.observed([busy("w0")], now_s=10.0, desired=2)
    assert [up.awaited for up in fed.scale_ups] == [1]
    fed = fed.observed([busy("w0")], now_s=20.0, desired=None)  # autoscaling turned off
    assert fed.scale_ups == ()


def test_a_scale_up_counts_for_at_most_max_reaction() -> None:
    fed = rounds([busy("w0")], desired=1).scaled_up(at_s=0.0, added=1, pods=["w0"])
    assert fed.waiting_s(5000.0) == estimates.MAX_REACTION_S
    fed = fed.observed([busy("w0"), busy("w1")], now_s=5000.0, desired=2)
    assert fed.reaction.samples_s == (estimates.MAX_REACTION_S,)


def test_a_scale_down_or_nothing_added_awaits_no_worker() -> None:
    assert FRESH.scaled_up(at_s=0.0, added=-2, pods=[]) == FRESH


# -- the warm headroom -------------------------------------------------------------------------


def derived(fed: estimates.Estimates, **raw: Any) -> headroom.WarmHeadroom | None:
    return fed.warm_headroom(
        autoscaling(**raw), now_s=20.0, busy_calls=4, slots_per_worker=3, round_s=5.0
    )


def test_no_target_or_autoscaling_off_derives_nothing() -> None:
    assert derived(FRESH) is None
    assert derived(FRESH, enabled=False, headroom={"missRate": 0.001}) is None


def test_the_target_is_derived_from_the_rate_and_the_default_reaction_plus_a_round() -> None:
    fed = rounds([busy("w0")], [busy("w0", "AJ_1", "AJ_2")])  # 0.2 calls/s
    warm = derived(fed, headroom={"missRate": 0.001}, maxReplicas=20)
    assert warm == headroom.derive(
        arrival_rate_per_s=0.2,
        reaction_s=65.0,
        miss_rate=0.001,
        slots_per_worker=3,
        max_workers=20,
        busy_calls=4,
    )


def test_a_scale_up_still_waiting_widens_the_reaction() -> None:
    fed = rounds([busy("w0")]).scaled_up(at_s=-100.0, added=1, pods=["w0"])
    warm = derived(fed, headroom={"missRate": 0.001})
    assert warm is not None
    assert warm.reaction_s == 120.0 + 5.0


def ended_calls(count: int, length_s: float) -> estimates.Estimates:
    lengths = estimates.CallLengths()
    for _ in range(count):
        lengths = lengths.ended(length_s)
    return estimates.Estimates(lengths=lengths)


@pytest.mark.parametrize(
    ("window", "used"),
    [("5m", True), ("30s", False)],
    ids=["window-outlasts-the-reaction", "window-shorter-than-the-reaction"],
)
def test_the_mean_call_length_counts_only_while_the_scale_down_waits_a_reaction(
    window: str, used: bool
) -> None:
    raw = {"headroom": {"missRate": 0.001}, "scaleDown": {"stabilizationWindow": window}}
    warm = derived(ended_calls(20, 180.0), **raw)
    assert warm is not None
    assert warm.mean_call_s == (180.0 if used else None)


def test_serving_calls_are_those_of_available_and_full_workers() -> None:
    workers = [
        busy("w0", "AJ_1"),
        worker("w1", load=0.9, jobs=3),
        worker("w2", load=0.3, jobs=2, state=WorkerState.DRAINING, terminating=True),
        worker("w3", state=WorkerState.UNKNOWN),
    ]
    assert estimates.serving_calls(workers) == 4
