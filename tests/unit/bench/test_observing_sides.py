"""bench/observing_sides.py: a side whose operator lists the pods again during its window has a
problem; a listing before or after the window is not one of this check's."""

from __future__ import annotations

import datetime
import importlib.util
import json
from pathlib import Path

from bench import observing_sides

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
