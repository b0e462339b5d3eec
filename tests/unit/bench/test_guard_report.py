"""bench/guard_plan.py and bench/guard_report.py: the scenarios, the seeded calls, and what each
side's callers saw turned into rooms served, latencies and agents per room; and the fleets both
sides run (bench/guard_sides.build_fleet)."""

from __future__ import annotations

import dataclasses
import json
import statistics

import pytest

from bench import guard_plan as plan
from bench import guard_report as report
from bench import guard_sides

TRAFFIC = plan.Traffic(seed=7)


def room(
    name: str = "r",
    *,
    dispatched_s: float = 10.0,
    joins: tuple[tuple[float, str], ...] = (),
    leaves: tuple[tuple[float, str], ...] = (),
    jobs: int | None = None,
    gave_up_s: float | None = None,
) -> report.RoomSeen:
    return report.RoomSeen(
        room=name,
        planned_s=dispatched_s,
        dispatched_s=dispatched_s,
        hold_s=10.0,
        joins=joins,
        leaves=leaves,
        jobs=len(joins) if jobs is None else jobs,
        gave_up_s=gave_up_s,
    )


def side_run(
    rooms: tuple[report.RoomSeen, ...],
    *,
    side: str = plan.GUARD_ON,
    status: tuple[report.StatusSample, ...] = (),
) -> report.SideRun:
    return report.SideRun(
        scenario="full", side=side, planned=len(rooms), rooms=rooms, status=status
    )


def sample(t_s: float, *, available: int = 0, replicas: int = 2) -> report.StatusSample:
    return report.StatusSample(t_s=t_s, replicas=replicas, available=available, full=0, pending=0)


# -- the fleets --------------------------------------------------------------------------------
@pytest.mark.parametrize("slots", range(1, 16))
def test_calls_per_worker_makes_a_worker_take_exactly_that_many_calls(slots: int) -> None:
    assert plan.slots_of(plan.calls_per_worker(slots)) == slots


def test_the_call_agents_default_of_four_calls_a_worker_is_full_at_three() -> None:
    assert plan.slots_of(4) == 3


def test_calls_per_worker_refuses_no_slot() -> None:
    with pytest.raises(ValueError, match="slots: 0"):
        plan.calls_per_worker(0)


def test_the_burst_is_three_times_the_warm_headroom_of_one_worker() -> None:
    burst = {s.key: s for s in plan.scenarios(30)}["burst"]
    assert burst.burst
    assert burst.min_replicas == {plan.GUARD_ON: 1, plan.GUARD_OFF: 1}
    assert 3 * burst.slots == 30


def test_only_the_guard_side_starts_from_zero_and_the_full_fleet_is_filled_to_its_slots() -> None:
    by_key = {s.key: s for s in plan.scenarios(30)}
    assert by_key["from-zero"].min_replicas == {plan.GUARD_ON: 0, plan.GUARD_OFF: 1}
    full = by_key["full"]
    assert full.min_replicas[plan.GUARD_ON] == full.max_replicas == 2
    assert full.fillers == full.slots * full.max_replicas


@pytest.mark.parametrize("key", ["from-zero", "full", "burst"])
def test_both_sides_run_the_same_fleet_but_the_guard_and_min_replicas(key: str) -> None:
    scenario = {s.key: s for s in plan.scenarios(30)}[key]
    on, off = (
        guard_sides.build_fleet(
            scenario, side, namespace="ns", agent_name="a", livekit_url="ws://x", max_wait_s=120
        )
        for side in (plan.GUARD_ON, plan.GUARD_OFF)
    )
    assert on["spec"].pop("dispatchGuard") == {"enabled": True, "maxWait": "120s"}
    assert off["spec"].pop("dispatchGuard") == {"enabled": False, "maxWait": "120s"}
    for manifest in (on, off):
        autoscaling = manifest["spec"]["autoscaling"]
        del autoscaling["minReplicas"]
        autoscaling.pop("scaleDown", None)  # (i): only while the guard side goes to zero
    assert on == off
    per_worker = on["spec"]["env"][0]
    assert per_worker["name"] == "E2E_CALLS_PER_WORKER"
    assert plan.slots_of(int(per_worker["value"])) == scenario.slots


# -- the calls ---------------------------------------------------------------------------------
def test_arrivals_are_the_same_for_the_same_seed_and_rise() -> None:
    first = plan.arrivals(3, 0.5, 30)
    assert first == plan.arrivals(3, 0.5, 30)
    assert len(first) == 30
    assert list(first) == sorted(first)
    assert first != plan.arrivals(4, 0.5, 30)


def test_arrivals_come_at_the_rate_asked_for() -> None:
    times = plan.arrivals(1, 0.5, 4000)
    gaps = [b - a for a, b in zip((0.0, *times), times, strict=False)]
    assert statistics.mean(gaps) == pytest.approx(2.0, rel=0.1)


def test_a_burst_places_every_call_at_once_and_holds_stay_in_range() -> None:
    burst = {s.key: s for s in plan.scenarios(30)}["burst"]
    planned = plan.plan_calls(burst, TRAFFIC, 2)
    assert [c.offset_s for c in planned] == [0.0] * 30
    assert all(5.0 <= c.hold_s <= 20.0 for c in planned)


def test_both_sides_get_the_same_calls_and_each_scenario_its_own() -> None:
    zero, full, _ = plan.scenarios(30)
    assert plan.plan_calls(zero, TRAFFIC, 0) == plan.plan_calls(zero, TRAFFIC, 0)
    assert plan.plan_calls(full, TRAFFIC, 1) != plan.plan_calls(zero, TRAFFIC, 0)
    fillers = plan.plan_fillers(full, TRAFFIC, 1)
    assert len(fillers) == full.fillers
    assert all(15.0 <= h <= 45.0 for h in fillers)
    assert plan.plan_fillers(zero, TRAFFIC, 0) == ()


# -- what the callers saw ----------------------------------------------------------------------
def test_the_wait_runs_from_the_dispatch_to_the_first_agent_seen() -> None:
    seen = room(dispatched_s=10.0, joins=((14.5, "agent-b"), (12.0, "agent-a")))
    assert report.joined_after_s(seen) == pytest.approx(2.0)
    assert report.joined_after_s(room()) is None


@pytest.mark.parametrize(
    ("joins", "leaves", "most", "came"),
    [
        (((1.0, "a"),), (), 1, 1),
        (((1.0, "a"), (5.0, "b")), ((4.0, "a"),), 1, 2),
        (((1.0, "a"), (3.0, "b")), ((4.0, "a"),), 2, 2),
        (((1.0, "a"), (4.0, "b")), ((4.0, "a"),), 1, 2),
        ((), (), 0, 0),
    ],
    ids=["one", "one-after-another", "two-at-once", "swap-at-the-same-instant", "none"],
)
def test_most_agents_counts_agents_in_the_room_at_once(
    joins: tuple[tuple[float, str], ...],
    leaves: tuple[tuple[float, str], ...],
    most: int,
    came: int,
) -> None:
    seen = room(joins=joins, leaves=leaves)
    assert report.most_agents(seen) == most
    assert report.agents_came(seen) == came


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([3.0, 1.0, 2.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([float(v) for v in range(1, 21)], 0.95, 19.05),
        ([7.0], 0.95, 7.0),
    ],
    ids=["odd-median", "even-median", "p95-interpolated", "one-value"],
)
def test_percentile_interpolates_between_the_closest_ranks(
    values: list[float], q: float, expected: float
) -> None:
    assert report.percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none() -> None:
    assert report.percentile([], 0.5) is None


def test_the_wait_with_a_worker_free_counts_only_while_the_room_waited() -> None:
    samples = (sample(0.0), sample(20.0, available=1), sample(30.0), sample(40.0, available=2))
    waiting = room(dispatched_s=10.0)
    # free 20-30 and 40-end (50): 20 s of its 40 s wait
    assert report.waited_with_capacity_s(waiting, samples, 50.0) == pytest.approx(20.0)
    served = room(dispatched_s=10.0, joins=((25.0, "a"),))
    assert report.waited_with_capacity_s(served, samples, 50.0) == pytest.approx(5.0)
    left = room(dispatched_s=10.0, gave_up_s=22.0)
    assert report.waited_with_capacity_s(left, samples, 50.0) == pytest.approx(2.0)


def test_summary_counts_rooms_served_their_waits_and_the_crowded_and_unserved_ones() -> None:
    rooms = (
        room("a", dispatched_s=0.0, joins=((1.0, "x"),)),
        room("b", dispatched_s=0.0, joins=((3.0, "y"),)),
        room("c", dispatched_s=2.0, joins=((4.0, "z"), (5.0, "w"))),
        room("d", dispatched_s=4.0, gave_up_s=124.0),
    )
    status = (sample(0.0, replicas=0), sample(1.0, replicas=3), sample(2.0, replicas=2))
    row = report.summarize(side_run(rooms, status=status))
    assert (row.served, row.planned) == (3, 4)
    assert row.p50_s == pytest.approx(2.0)
    assert row.slowest_s == pytest.approx(3.0)
    assert row.most_agents == 2
    assert row.crowded == ("c",)
    assert row.never == ("d",)
    assert (row.workers_at_start, row.most_workers) == (0, 3)
    assert row.dispatch_span_s == pytest.approx(4.0)


def test_a_second_job_in_a_room_is_crowded_even_when_its_agent_was_not_seen() -> None:
    row = report.summarize(side_run((room("a", joins=((11.0, "x"),), jobs=2),)))
    assert row.crowded == ("a",)
    assert "FAIL" in report.verdicts(row)


@pytest.mark.parametrize(
    ("side", "served", "verdict"),
    [
        (plan.GUARD_ON, True, "1/1 served PASS, <=1 agent PASS"),
        (plan.GUARD_ON, False, "1/1 served FAIL, <=1 agent PASS"),
        (plan.GUARD_OFF, False, "<=1 agent PASS"),
    ],
    ids=["guard-all-served", "guard-one-missed", "no-guard-no-served-target"],
)
def test_only_the_guard_side_has_the_every_room_served_target(
    side: str, served: bool, verdict: str
) -> None:
    joins = ((11.0, "x"),) if served else ()
    assert report.verdicts(report.summarize(side_run((room(joins=joins),), side=side))) == verdict


def test_the_table_has_a_row_per_scenario_and_side_in_the_scenarios_order() -> None:
    sides = [
        report.SideRun(scenario=key, side=side, planned=1, rooms=(room(joins=((11.0, "x"),)),))
        for key in ("full", "from-zero")
        for side in (plan.GUARD_OFF, plan.GUARD_ON)
    ]
    table = report.render(sides, {"from-zero": "(i)", "full": "(ii)"}).splitlines()
    assert [line.split(" | ")[:2] for line in table[2:]] == [
        ["| (i)", plan.GUARD_ON],
        ["| (i)", plan.GUARD_OFF],
        ["| (ii)", plan.GUARD_ON],
        ["| (ii)", plan.GUARD_OFF],
    ]
    assert "**1/1**" in table[2]


def test_findings_name_a_room_with_two_agents_and_an_unserved_guarded_call() -> None:
    status = (sample(0.0, available=1),)
    crowded = room("two", joins=((11.0, "x"), (12.0, "y")))
    unserved = room("none", dispatched_s=0.0, gave_up_s=120.0)
    guarded = report.findings(side_run((crowded, unserved), status=status), wait_s=120.0)
    assert len(guarded) == 2
    assert "room two had 2 agents at once" in guarded[0]
    assert "room none" in guarded[1]
    assert "available for 120 s" in guarded[1]
    unguarded = report.findings(side_run((unserved,), side=plan.GUARD_OFF), wait_s=120.0)
    assert unguarded == [], "without the guard an unserved call is the expected drop"


def test_a_side_is_written_as_json_with_its_figures_and_rooms() -> None:
    run = side_run((room("a", joins=((11.0, "x"),)),), status=(sample(0.0),))
    written = json.loads(json.dumps(report.side_json(run)))
    assert written["summary"]["served"] == 1
    assert written["rooms"][0]["joined_after_s"] == pytest.approx(1.0)
    assert written["status"] == [[0.0, 2, 0, 0, 0]]


# -- the LiveKit server's log ------------------------------------------------------------------
def server_line(time: str, message: str, **fields: str) -> str:
    return "\t".join([time, "INFO", "livekit", "rtc/room.go:1", message, json.dumps(fields)])


SERVER_LOG = [
    server_line("2026-12-07T12:30:30.655Z", "participant active", room="a", participant="caller"),
    server_line("2026-12-07T12:30:30.665Z", report.CREATE_DISPATCH, room="a", method="Create"),
    server_line(
        "2026-12-07T12:30:31.010Z", "participant active", room="a", participant="agent-AJ_1"
    ),
    server_line("2026-12-07T12:30:35.000Z", report.CREATE_DISPATCH, room="a", method="Create"),
    server_line(
        "2026-12-07T12:30:36.000Z", "participant active", room="a", participant="agent-AJ_1"
    ),
    server_line(
        "2026-12-07T12:30:40.000Z", "participant active", room="b", participant="agent-AJ_2"
    ),
    server_line(
        "2026-12-07T12:30:41.000Z", "participant active", room="x", participant="agent-AJ_3"
    ),
    "2026-12-07T12:30:42.000Z\tINFO\tlivekit\tnot a json line",
]


def test_the_server_log_gives_each_rooms_first_dispatch_and_its_agents() -> None:
    found = report.read_server_log(SERVER_LOG, ["a", "b", "c"])
    assert set(found) == {"a", "b", "c"}
    assert found["a"].wait_s == pytest.approx(0.345)
    assert [who for _, who in found["a"].agents] == ["agent-AJ_1"], "the caller is no agent"
    assert found["b"].dispatched_at is None
    assert found["b"].wait_s is None
    assert found["c"] == report.ServerRoom()


def test_two_agents_in_the_servers_log_make_a_room_crowded() -> None:
    two = dataclasses.replace(room("a", joins=((11.0, "x"),)), server_agents=2, server_wait_s=0.4)
    row = report.summarize(side_run((two,)))
    assert row.crowded == ("a",)
    assert row.server_p50_s == pytest.approx(0.4)
    assert "FAIL" in report.verdicts(row)


def test_a_scenario_whose_sides_ran_different_source_is_named() -> None:
    def ran(scenario: str, side: str, source: str) -> report.SideRun:
        return report.SideRun(scenario=scenario, side=side, planned=0, rooms=(), source=source)

    sides = [
        ran("from-zero", plan.GUARD_ON, "aaa"),
        ran("from-zero", plan.GUARD_OFF, "aaa"),
        ran("burst", plan.GUARD_ON, "aaa"),
        ran("burst", plan.GUARD_OFF, "bbb"),
    ]
    assert report.source_changes(sides) == [
        "burst: the sides ran different operator or runtime source (guard-on aaa, guard-off bbb)"
    ]
