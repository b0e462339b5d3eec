"""bench/observing_sides.py and bench/observing.py's command line: a side whose operator lists
the pods again during its window has a problem (a listing before or after the window is not one
of this check's); the sides are chosen by name, and the waits grow with the fleet."""

from __future__ import annotations

import datetime
import importlib.util
import json
from pathlib import Path

import pytest

from bench import observing, observing_sides

START = datetime.datetime(2026, 12, 7, 17, 50, tzinfo=datetime.UTC)
WINDOW = (START, START + datetime.timedelta(seconds=90))


def line(message: str, at: datetime.datetime | str) -> str:
    when = at if isinstance(at, str) else at.isoformat(timespec="milliseconds")
    record = {"time": when, "severity": "WARNING", "logger": "sync", "message": message}
    return json.dumps(record | {"agentworker": "bench-observing/observe-3", "listed": 0})


RELIST = "the pod watch disagrees with the Deployment: listed the pods again"


def test_a_relisting_in_the_window_is_a_problem_naming_the_line() -> None:
    during = line(RELIST, START + datetime.timedelta(seconds=30))
    (problem,) = observing_sides.relists_in_window([during], WINDOW)
    assert problem.startswith(observing_sides.RELISTED)
    assert "observe-3" in problem


def test_relistings_outside_the_window_and_other_lines_are_not() -> None:
    lines = [
        line(RELIST, START - datetime.timedelta(seconds=1)),
        line(RELIST, WINDOW[1] + datetime.timedelta(seconds=1)),
        line("a worker did not answer", START + datetime.timedelta(seconds=5)),
        "Traceback (most recent call last):",
    ]
    assert observing_sides.relists_in_window(lines, WINDOW) == []


def test_a_relisting_whose_time_does_not_parse_counts_as_in_the_window() -> None:
    assert len(observing_sides.relists_in_window([line(RELIST, "yesterday")], WINDOW)) == 1


def test_the_check_looks_for_the_operators_own_wording() -> None:
    found = importlib.util.find_spec("agentworker_operator.sync")
    assert found is not None
    assert found.origin is not None
    assert f'"{observing_sides.RELIST}: listed the pods again"' in Path(found.origin).read_text()


def test_the_sides_are_chosen_in_order_and_the_results_get_their_own_name() -> None:
    sides = ["--sides", "one", "shards-2", "--side", "shards-4"]
    asked = observing.parse_args(["--agentworkers", "50", *sides, "--name", "observing-shards"])
    assert asked.cfg.sides == ("one", "shards-2", "shards-4")
    assert asked.cfg.shape.workers == 5_000
    assert (asked.name, asked.write) == ("observing-shards", True)


@pytest.mark.parametrize(
    "argv",
    [["--sides", "shards-99"], ["--agentworkers", "101", "--workers-per-agentworker", "100"]],
    ids=["unknown-side", "more-workers-than-the-phantom-node-takes"],
)
def test_a_run_the_benchmark_cannot_make_is_refused_at_once(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        observing.parse_args(argv)


@pytest.mark.parametrize(
    ("agentworkers", "bound_s"), [(5, 300.0), (10, 300.0), (50, 1_500.0)], ids=["500", "1k", "5k"]
)
def test_the_waits_for_the_pods_grow_with_the_fleet_never_below_a_thousands(
    agentworkers: int, bound_s: float
) -> None:
    cfg = observing_sides.ObservingConfig(agentworkers=agentworkers)
    assert cfg.scaled(300.0) == bound_s
