"""The demo's verdict: completed calls, reactions of the scale-ups, the summary and its problems."""

from __future__ import annotations

from typing import Any

import pytest

from hack.demo import verdict
from hack.demo.verdict import CallVerdict
from tests.unit.demo.readings import T0, calls, event, ledger, sample, two_call_run

POLICY = verdict.Policy(target_load=0.5, min_available=2, load_threshold=0.7, calls_per_worker=4)


def test_reaction_runs_from_the_call_that_put_the_load_above_target_to_the_worker_ready() -> None:
    records = calls(
        ("a", 0, 60, "w1"), ("b", 1, 60, "w1"), ("c", 2, 60, "w2"), ("d", 3, 60, "w2"),
        ("e", 4, 60, "w2"),  # 5 calls on 2 workers: 0.62 > target 0.50
    )  # fmt: skip
    samples = [sample(t) for t in range(0, 7)] + [sample(7, desired=3), sample(12, ready=3)]
    loose = verdict.Policy(target_load=0.5, min_available=1, load_threshold=0.7, calls_per_worker=4)
    found = verdict.reactions(samples, [event(7, "ScaledUp", (2, 3))], records, loose)
    assert [(r.asked_at - T0, r.ready_s) for r in found] == [(4.0, 8.0)]


def test_reaction_counts_a_full_worker_that_leaves_too_few_warm_ones() -> None:
    records = calls(("a", 0, 60, "w1"), ("b", 1, 60, "w1"), ("c", 2, 60, "w1"))  # w1 full
    samples = [sample(t) for t in range(0, 5)] + [sample(5, desired=3), sample(9, ready=3)]
    found = verdict.reactions(samples, [event(5, "ScaledUp", (2, 3))], records, POLICY)
    assert [(r.asked_at - T0, r.ready_s) for r in found] == [(2.0, 7.0)]


def test_reaction_starts_after_the_last_moment_the_fleet_had_enough() -> None:
    records = calls(
        ("a", 0, 60, "w1"), ("b", 1, 60, "w1"), ("c", 2, 3, "w1"),  # full at 2, not at 3
        ("d", 4, 60, "w1"),  # full again
    )  # fmt: skip
    found = verdict.reactions(
        [sample(t) for t in range(0, 8)], [event(6, "ScaledUp", (2, 3))], records, POLICY
    )
    assert found[0].asked_at == T0 + 4


def test_reaction_of_a_second_scale_up_starts_no_earlier_than_the_first() -> None:
    records = calls(*((f"r{n}", n, 60, "w1") for n in range(8)))
    samples = [sample(t, ready=2 + (t >= 20)) for t in range(0, 30)]
    ups = [event(5, "ScaledUp", (2, 3)), event(15, "ScaledUp", (3, 4))]
    found = verdict.reactions(samples, ups, records, POLICY)
    assert [r.asked_at - T0 for r in found] == [2.0, 6.0]
    assert found[1].ready_at is None, "never 4 ready"


def judged(started: bool, ended_how: str | None, caller_ok: bool) -> CallVerdict:
    return CallVerdict(room="r", started=started, ended_how=ended_how, caller_ok=caller_ok)


@pytest.mark.parametrize(
    ("verdict_", "completed", "why"),
    [
        (judged(True, "completed", True), True, ""),
        (judged(False, None, False), False, "no worker"),
        (judged(True, None, False), False, "killed"),
        (judged(True, "shutdown", False), False, "ended shutdown"),
        (judged(True, "completed", False), False, "caller"),
    ],
    ids=["completed", "never-started", "no-end", "shut-down", "caller-saw-it-cut"],
)
def test_a_call_is_completed_only_when_the_agent_and_the_caller_agree(
    verdict_: CallVerdict, completed: bool, why: str
) -> None:
    assert verdict_.completed is completed
    if not completed:
        assert why in verdict_.why_lost


@pytest.mark.parametrize(
    ("joined", "bye", "gaps", "through"),
    [
        (True, True, 0, True),
        (False, False, 0, False),
        (True, False, 0, False),
        (True, True, 1, False),
    ],
    ids=["joined-and-bye", "agent-never-came", "no-bye", "agent-left-and-came-back"],
)
def test_a_caller_saw_it_through_only_with_the_agents_bye_and_no_gap(
    joined: bool, bye: bool, gaps: int, through: bool
) -> None:
    found = verdict.caller_saw_it_through(agent_joined=joined, said_bye=bye, interruptions=gaps)
    assert found is through


def test_call_verdicts_read_the_ledger_and_the_callers() -> None:
    records = ledger(("start", "a", 0, ""), ("end", "a", 5, "completed"), ("start", "b", 0, ""))
    found = verdict.call_verdicts(["a", "b", "c"], records, {"a": True, "b": True})
    assert [(v.room, v.completed, v.started) for v in found] == [
        ("a", True, True),
        ("b", False, True),
        ("c", False, False),
    ]


def run_of_two_calls() -> dict[str, Any]:
    run = two_call_run()
    records, samples, events = run.records, run.samples, run.events
    verdicts = verdict.call_verdicts(["a", "b"], records, {"a": True, "b": True})
    tight = verdict.Policy(target_load=0.2, min_available=2, load_threshold=0.7, calls_per_worker=4)
    return {
        "planned": 2, "verdicts": verdicts, "samples": samples, "events": events,
        "records": records, "t0": T0, "policy": tight, "resting": 2,
    }  # fmt: skip


def test_summary_of_a_good_run_has_no_problem_and_says_so_in_one_paragraph() -> None:
    summary = verdict.summarize(**run_of_two_calls())
    assert summary.problems == ()
    assert (summary.started, summary.completed, summary.lost) == (2, 2, ())
    assert (summary.replicas_min, summary.replicas_max, summary.ready_max) == (2, 3, 3)
    assert (summary.scale_ups, summary.scale_downs, summary.peak_calls) == (1, 1, 2)
    assert (summary.last_call_end_s, summary.settled_s) == (31.0, 40.0)
    assert summary.reactions[0].ready_s == 11.0, "from the second call (2 calls / 8 > 0.2)"
    text = verdict.paragraph(summary)
    assert "2 started, 2 completed, 0 lost" in text
    assert "2 to 3 workers (1 scale-up, 1 scale-down; at most 3 ready)" in text
    assert "11 s for the first scale-up (2→3)" in text
    assert (
        "The last call ended at +31 s; the fleet was back at rest (2 workers, all ready) at +40 s"
        in text
    )


def test_a_fleet_never_back_at_rest_is_said_so() -> None:
    run = run_of_two_calls()
    run["samples"] = run["samples"][:-1]  # the last sample still had a worker draining
    summary = verdict.summarize(**run)
    assert summary.settled_s is None
    assert "the fleet was not back at rest (2 workers, all ready) when the demo stopped" in (
        verdict.paragraph(summary)
    )


def test_a_lost_call_is_a_problem_that_names_its_room_and_why() -> None:
    run = run_of_two_calls()
    run["verdicts"] = verdict.call_verdicts(["a", "b"], run["records"], {"a": True})
    summary = verdict.summarize(**run)
    assert summary.problems == (
        "1 of 2 calls lost: b (its caller never heard the agent's bye, or saw it leave and come "
        "back)",
    )


@pytest.mark.parametrize(
    ("kept", "problem"),
    [("ScaledDown", "nothing scaled up"), ("ScaledUp", "nothing scaled down")],
    ids=["no-scale-up", "no-scale-down"],
)
def test_a_fleet_that_did_not_scale_both_ways_is_a_problem(kept: str, problem: str) -> None:
    run = run_of_two_calls()
    run["events"] = [e for e in run["events"] if e.reason == kept]
    summary = verdict.summarize(**run)
    assert [p for p in summary.problems if problem in p]


def test_errors_on_the_way_are_problems_too() -> None:
    summary = verdict.summarize(**run_of_two_calls(), errors=("placing 4 burst calls failed",))
    assert summary.problems == ("placing 4 burst calls failed",)
