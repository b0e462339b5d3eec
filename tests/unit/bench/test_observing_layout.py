"""bench/observing_layout.py and the metrics bench/observing_processes.py reads: the sides a run
may choose, the operator's own split of the AgentWorkers among shards, and the check that each
process of a side holds its own shard and handles exactly its AgentWorkers."""

from __future__ import annotations

import pytest

from agentworker_operator import sharding
from bench import observing_layout as layout
from bench import observing_processes as processes
from bench import observing_report as report
from bench.fake_fleet import FleetShape
from bench.observing_layout import Role, Seen

SHAPE = FleetShape(agentworkers=50, workers_per_agentworker=100)
NAMESPACE = "bench-observing"


@pytest.mark.parametrize(
    ("key", "processes", "args", "title"),
    [
        ("watch", 1, (), "long polls (default)"),
        ("no-watch", 1, ("--no-worker-watch",), "--no-worker-watch"),
        ("one", 1, (), "1 process (all 5,000 workers)"),
        ("shards-2", 2, ("--shards", "2"), "2 shards (2 processes, --shards 2)"),
        ("shards-4", 4, ("--shards", "4"), "4 shards (4 processes, --shards 4)"),
    ],
    ids=["watch", "no-watch", "one", "two-shards", "four-shards"],
)
def test_a_side_names_its_processes_and_their_arguments(
    key: str, processes: int, args: tuple[str, ...], title: str
) -> None:
    side = layout.side(key, workers=5_000)
    assert (side.processes, side.shards, side.operator_args, side.title) == (
        processes,
        processes,
        args,
        title,
    )


@pytest.mark.parametrize("key", ["shards-1", "shards-9", "shards-x", "both", ""])
def test_an_unknown_side_is_refused_with_the_choices(key: str) -> None:
    with pytest.raises(ValueError, match="not one of watch, no-watch, one, shards-N"):
        layout.side(key, workers=1_000)


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_the_shards_split_every_agentworker_once_as_the_operator_does(shards: int) -> None:
    roles = layout.roles(SHAPE, NAMESPACE, shards)
    assert sorted(roles) == list(range(shards))
    names = [name for role in roles.values() for name in role.agentworkers]
    assert sorted(names) == sorted(f"observe-{aw}" for aw in range(50))
    for role in roles.values():
        assert role.workers == 100 * len(role.agentworkers)
        assert all(sharding.shard_of(NAMESPACE, n, shards) == role.shard for n in role.agentworkers)


def split() -> dict[int, Role]:
    return {
        0: Role(shard=0, shards=2, agentworkers=("a", "b"), workers=200),
        1: Role(shard=1, shards=2, agentworkers=("c",), workers=100),
    }


def seen(shard: int | None, *names: str, observed: tuple[str, ...] | None = None) -> Seen:
    return Seen(
        shard=shard,
        handled=frozenset(names),
        observed=frozenset(names if observed is None else observed),
    )


def test_processes_on_their_own_shards_reading_their_own_agentworkers_are_placed() -> None:
    assert layout.misplaced(split(), [seen(1, "c"), seen(0, "a", "b")]) == []
    assert [r.shard for r in layout.by_process(split(), [1, 0])] == [1, 0]


@pytest.mark.parametrize(
    ("processes_seen", "said"),
    [
        ([seen(None), seen(0, "a", "b")], "process 0 holds no shard"),
        ([seen(0, "a", "b"), seen(0, "a", "b")], "processes 0 and 1 both hold 0"),
        ([seen(0, "a", "b", "c"), seen(1, "c")], "process 0 (shard 0) handles other shards' c"),
        (
            [seen(0, "a", "b", observed=("a",)), seen(1, "c")],
            "process 0 (shard 0) has not read the workers of 1 of its AgentWorkers, e.g. b",
        ),
    ],
    ids=["standby", "same-shard", "strays", "not-read-yet"],
)
def test_a_process_off_its_shard_is_named(processes_seen: list[Seen], said: str) -> None:
    assert any(said in line for line in layout.misplaced(split(), processes_seen))


METRICS = f"""\
# HELP agentworker_operator_leader 1 while this replica holds the leader Lease.
# TYPE agentworker_operator_leader gauge
agentworker_operator_leader 1.0
# HELP agentworker_operator_shard 1 while this replica holds the Lease of this shard.
# TYPE agentworker_operator_shard gauge
agentworker_operator_shard{{shard="1"}} 1.0
# HELP agentworker_operator_observation_duration_seconds Time to read every worker.
# TYPE agentworker_operator_observation_duration_seconds histogram
{report.OBSERVE_COUNT}{{name="observe-3",namespace="{NAMESPACE}"}} 4.0
{report.OBSERVE_COUNT}{{name="observe-7",namespace="{NAMESPACE}"}} 0.0
{report.OBSERVE_SUM}{{name="observe-3",namespace="{NAMESPACE}"}} 2.5
{report.OBSERVE_SUM}{{name="observe-7",namespace="{NAMESPACE}"}} 0.0
# HELP agentworker_replicas Worker pods.
# TYPE agentworker_replicas gauge
agentworker_replicas{{name="elsewhere",namespace="other"}} 3.0
"""


def test_an_operators_metrics_say_its_shard_and_the_agentworkers_it_read() -> None:
    found = processes.parse_metrics(METRICS, namespace=NAMESPACE, shards=2)
    assert found.seen == Seen(
        shard=1, handled=frozenset({"observe-3", "observe-7"}), observed=frozenset({"observe-3"})
    )
    assert found.sums[report.OBSERVE_COUNT] == 4.0


def test_with_one_shard_the_leader_holds_shard_zero_and_a_standby_none() -> None:
    assert processes.parse_metrics(METRICS, namespace=NAMESPACE, shards=1).seen.shard == 0
    standby = METRICS.replace("agentworker_operator_leader 1.0", "agentworker_operator_leader 0.0")
    assert processes.parse_metrics(standby, namespace=NAMESPACE, shards=1).seen.shard is None
