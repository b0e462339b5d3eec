"""What the demo saw: samples of the fleet, its scale events, its calls, the plot's series."""

from __future__ import annotations

from hack.demo import timeline
from tests.unit.demo.readings import T0, ledger, two_call_run


def test_sample_reads_the_status_the_deployment_and_the_calls() -> None:
    status = {"available": 1, "full": 2, "starting": 1, "unknown": 0, "load": 0.61, "activeJobs": 6}
    deployment = {"spec": {"replicas": 4}, "status": {"readyReplicas": 3}}
    found = timeline.sample_from(T0, status, deployment, calls=7)
    assert (found.desired, found.ready, found.full, found.starting) == (4, 3, 2, 1)
    assert (found.load, found.calls, found.jobs, found.draining) == (0.61, 7, 6, 0)


def test_sample_before_the_operator_wrote_anything_is_all_zero() -> None:
    found = timeline.sample_from(T0, {}, None, calls=0)
    assert (found.desired, found.ready, found.available, found.load) == (0, 0, 0, None)


def test_calls_on_line_counts_started_and_not_yet_ended() -> None:
    records = ledger(("start", "a", 0, ""), ("start", "b", 5, ""), ("end", "a", 10, "completed"))
    assert [timeline.calls_on_line(records, T0 + t) for t in (-1, 0, 5, 9.9, 10, 20)] == [
        0, 1, 2, 2, 1, 1,
    ]  # fmt: skip


def test_call_steps_are_a_step_series_from_the_start_of_the_load() -> None:
    records = ledger(("start", "a", 1, ""), ("start", "b", 2, ""), ("end", "a", 4, "completed"))
    assert timeline.call_steps(records, T0) == ((0.0, 1.0, 2.0, 4.0), (0, 1, 2, 1))


def test_scale_events_keep_this_runs_scaled_up_and_down_with_their_change() -> None:
    raw = [
        {"reason": "ScaledUp", "message": "4 of 2 ... : 2 -> 3 workers",
         "lastTimestamp": "2027-01-15T08:00:10Z"},
        {"reason": "Ready", "message": "ready", "lastTimestamp": "2027-01-15T08:00:11Z"},
        {"reason": "ScaledDown", "message": "load 0.1 < target 0.50: 3 -> 2 workers",
         "eventTime": "2027-01-15T08:01:00.500000Z"},
        {"reason": "ScaledUp", "message": "old: 1 -> 2 workers",
         "lastTimestamp": "2027-01-15T07:00:00Z"},
    ]  # fmt: skip
    since = timeline._unix_time("2027-01-15T08:00:00Z")
    assert since is not None
    found = timeline.scale_events(raw, since=since)
    assert [(e.reason, e.label, e.t - since) for e in found] == [
        ("ScaledUp", "2→3", 10.0),
        ("ScaledDown", "3→2", 60.5),
    ]


def test_a_scale_event_whose_message_names_no_change_is_labelled_by_its_reason() -> None:
    found = timeline.scale_events(
        [{"reason": "ScaledDown", "message": "?", "lastTimestamp": "2027-01-15T08:00:10Z"}],
        since=0,
    )
    assert found[0].label == "ScaledDown"


def test_plot_data_turns_samples_and_ledger_into_offsets() -> None:
    run = two_call_run()
    records, samples, events = run.records, run.samples, run.events
    data = timeline.plot_data(samples, events, records, ((0.0, 1), (1.0, 2), (30.0, 0)), t0=T0)
    assert data.t == (0.0, 2.0, 5.0, 12.0, 35.0, 40.0)
    assert data.desired == (2, 2, 3, 3, 2, 2)
    assert data.by_state["full"] == (0, 1, 0, 0, 0, 0)
    assert data.by_state["draining"][-2:] == (1, 0)
    assert (data.call_t, data.calls) == ((0.0, 0.0, 1.0, 30.0, 31.0), (0, 1, 2, 1, 0))
    assert (data.plan_t, data.plan) == ((0.0, 1.0, 30.0), (1, 2, 0))
    assert data.events == ((5.0, "2→3", True), (34.0, "3→2", False))
