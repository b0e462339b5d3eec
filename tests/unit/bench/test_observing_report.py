"""bench/observing_report.py and bench/observing_tables.py: a side's figures from its samples,
plain reads and long polls apart, and the sides set next to each other."""

from __future__ import annotations

import pytest

from bench import observing_report as report
from bench import observing_tables as tables


def sample(
    t_s: float,
    *,
    plain: int = 0,
    polls: dict[str, int] | None = None,
    held: int = 0,
    decisions: float = 0.0,
    decided_s: float = 0.0,
) -> report.Sample:
    polls = polls or {}
    return report.Sample(
        t_s=t_s,
        operator_cpu_s=t_s * 0.1,
        operator_rss_mb=100.0,
        fake_workers_cpu_s=0.0,
        bench_cpu_s=0.0,
        worker_requests=plain + sum(polls.values()),
        worker_plain=plain,
        polls=polls,
        polls_held=held,
        worker_changes=0,
        worker_connections=0,
        metrics={
            report.SYNC_COUNT: t_s / 5.0,
            report.CHANGE_COUNT: decisions,
            report.CHANGE_SUM: decided_s,
        },
        api={},
        watch_events={},
    )


def watched() -> report.Figures:
    first = sample(0.0, plain=500, polls={"on_wait": 100, "at_once": 3}, held=960, decisions=1)
    last = sample(
        10.0,
        plain=2_500,
        polls={"on_wait": 300, "at_once": 3, "on_change": 7},
        held=970,
        decisions=5,
        decided_s=0.4,
    )
    return report.figures([first, last], sync_period_s=5.0)


def test_figures_take_plain_reads_and_polls_apart_over_the_window() -> None:
    f = watched()
    assert f.worker_plain == 2_000
    assert f.worker_requests == 2_207
    assert f.polls == {"at_once": 0, "on_change": 7, "on_wait": 200, "dropped": 0, "refused": 0}
    assert f.polls_held == (960, 970)
    assert f.change_decisions == 4
    assert f.change_decision_mean_s is not None
    assert abs(f.change_decision_mean_s - 0.1) < 1e-9


def test_plain_reads_per_round_are_checked_against_the_fleet_not_the_polls() -> None:
    rows = report.rows(watched(), workers=1_000, streaming=970, sync_period_s=5.0)
    by_key = {row.key: row for row in rows}
    assert by_key["worker_requests_per_sync"].value == 1_000
    assert by_key["worker_requests_per_s"].passed is True
    assert by_key["poll_answers_per_s"].value == pytest.approx(20.7)
    assert by_key["polls_refused"].passed is True


def test_the_sides_are_columns_of_one_table_with_their_verdicts() -> None:
    quiet = report.figures([sample(0.0), sample(10.0, plain=2_000)], sync_period_s=5.0)
    sides = [
        tables.SideTable(
            title=title,
            figures=f,
            rows=report.rows(f, workers=1_000, streaming=970, sync_period_s=5.0),
        )
        for title, f in (("long polls (default)", watched()), ("--no-worker-watch", quiet))
    ]
    header, rule, *body = tables.render_markdown(sides).splitlines()
    assert header == "| metric | target | long polls (default) | --no-worker-watch |"
    assert rule == "|---|---|---|---|"
    cpu = next(line for line in body if line.startswith("| operator CPU, share of one core"))
    assert cpu.endswith("| 10.0 % PASS | 10.0 % PASS |")
    held = next(line for line in body if line.startswith("| long polls held"))
    assert held.endswith("| 965 / 970 of 970 | 0 / 0 of 970 |")
