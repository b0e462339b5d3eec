"""bench/observing_report.py, bench/observing_rows.py and bench/observing_tables.py: a side's
figures from its samples, plain reads and long polls apart, each operator process of a sharded
side judged on its own, and the sides set next to each other."""

from __future__ import annotations

import dataclasses

import pytest

from bench import observing_report as report
from bench import observing_rows as rows
from bench import observing_tables as tables
from bench.observing_layout import Role

SETTING = rows.Setting(
    workers=1_000, workers_per_agentworker=100, streaming=970, sync_period_s=5.0, fd_limit=20_000
)
ALL = Role(shard=0, shards=1, agentworkers=tuple(f"observe-{i}" for i in range(10)), workers=1_000)


def operator(
    t_s: float,
    *,
    cpu_share: float = 0.1,
    rounds_per_s: float = 0.2,
    round_s: float = 2.0,
    decisions: float = 0.0,
    decided_s: float = 0.0,
    fds: int = 50,
) -> report.OperatorSample:
    return report.OperatorSample(
        cpu_s=t_s * cpu_share,
        rss_mb=100.0,
        fds=fds,
        metrics={
            report.SYNC_COUNT: t_s * rounds_per_s,
            report.SYNC_SUM: t_s * rounds_per_s * round_s,
            report.CHANGE_COUNT: decisions,
            report.CHANGE_SUM: decided_s,
        },
    )


def sample(
    t_s: float,
    *operators: report.OperatorSample,
    plain: int = 0,
    polls: dict[str, int] | None = None,
    held: int = 0,
) -> report.Sample:
    polls = polls or {}
    return report.Sample(
        t_s=t_s,
        operators=operators or (operator(t_s),),
        fake_workers_cpu_s=0.0,
        fake_workers_fds=1_000,
        bench_cpu_s=0.0,
        worker_requests=plain + sum(polls.values()),
        worker_plain=plain,
        polls=polls,
        polls_held=held,
        worker_changes=0,
        worker_connections=0,
        api={},
        watch_events={},
    )


def watched() -> report.Figures:
    first = sample(
        0.0, operator(0.0, decisions=1), plain=500, polls={"on_wait": 100, "at_once": 3}, held=960
    )
    last = sample(
        10.0,
        operator(10.0, decisions=5, decided_s=0.4),
        plain=2_500,
        polls={"on_wait": 300, "at_once": 3, "on_change": 7},
        held=970,
    )
    return report.figures([first, last], sync_period_s=5.0)


def by_key(
    figures: report.Figures, roles: list[Role], setting: rows.Setting
) -> dict[str, rows.Row]:
    return {row.key: row for row in rows.rows(figures, roles, setting)}


def test_figures_take_plain_reads_and_polls_apart_over_the_window() -> None:
    f = watched()
    assert f.worker_plain == 2_000
    assert f.worker_requests == 2_207
    assert f.polls == {"at_once": 0, "on_change": 7, "on_wait": 200, "dropped": 0, "refused": 0}
    assert f.polls_held == (960, 970)
    assert f.change_decisions == 4
    assert f.change_decision_mean_s == pytest.approx(0.1)


def test_plain_reads_per_round_are_checked_against_the_fleet_not_the_polls() -> None:
    found = by_key(watched(), [ALL], SETTING)
    assert found["worker_requests_per_sync"].value == 1_000
    assert found["worker_requests_per_s"].passed is True
    assert found["poll_answers_per_s"].value == pytest.approx(20.7)
    assert found["polls_refused"].passed is True


def shards(*cpu: float, round_s: float = 2.0) -> report.Figures:
    samples = [
        sample(t, *(operator(t, cpu_share=c, round_s=round_s) for c in cpu), plain=int(200 * t))
        for t in (0.0, 5.0, 10.0)
    ]
    return report.figures(samples, sync_period_s=5.0)


def halves() -> list[Role]:
    return [
        Role(shard=1, shards=2, agentworkers=("observe-0", "observe-2"), workers=200),
        Role(shard=0, shards=2, agentworkers=("observe-1",), workers=100),
    ]


def test_a_sharded_side_is_judged_by_its_busiest_process_and_costs_their_sum() -> None:
    found = by_key(shards(0.15, 0.25), halves(), SETTING)
    assert found["cpu_share"].value == pytest.approx(0.25)
    assert found["cpu_share"].passed is False
    assert found["cpu_share_by_process"].text == "shard 0: 25.0 %, shard 1: 15.0 %"
    assert found["cpu_share_sum"].value == pytest.approx(0.40)


def test_the_first_row_says_which_shard_each_process_holds_and_its_workers() -> None:
    text = by_key(shards(0.1, 0.1), halves(), SETTING)["processes"].text
    assert text == "2 (shard 0: 1 AgentWorker, 100 workers, shard 1: 2 AgentWorkers, 200 workers)"
    assert by_key(watched(), [ALL], SETTING)["processes"].text == (
        "1 (all 10 AgentWorkers, 1,000 workers)"
    )


def test_a_sharded_side_counts_rounds_per_process_and_per_round_figures_per_installation() -> None:
    found = by_key(shards(0.1, 0.1), halves(), SETTING)
    assert found["syncs"].text == "shard 0: 2, shard 1: 2"
    assert found["syncs"].passed is True
    # 2,000 plain reads over 2 rounds of the installation (each process did 2, one per shard)
    assert found["worker_requests_per_sync"].value == 1_000


def test_rounds_that_outlast_the_period_are_counted_and_fail_the_rounds_target() -> None:
    slow = [
        sample(t, operator(t, rounds_per_s=0.125, round_s=8.0), plain=int(200 * t))
        for t in (0.0, 8.0, 16.0, 24.0, 32.0, 40.0)
    ]
    found = by_key(report.figures(slow, sync_period_s=5.0), [ALL], SETTING)
    assert found["sync_duration_s"].text == "8.00 / 8.00 s (5 of 5 over 5 s)"
    assert found["syncs"].passed is False


def test_open_files_near_the_limit_fail() -> None:
    crowded = [sample(t, operator(t, fds=19_000)) for t in (0.0, 10.0)]
    found = by_key(report.figures(crowded, sync_period_s=5.0), [ALL], SETTING)
    assert found["open_files"].text == "19,000 / 1,000"
    assert found["open_files"].passed is True
    tight = dataclasses.replace(SETTING, fd_limit=10_000)
    assert (
        by_key(report.figures(crowded, sync_period_s=5.0), [ALL], tight)["open_files"].passed
        is False
    )


def side(title: str, f: report.Figures, roles: list[Role]) -> tables.SideTable:
    return tables.SideTable(
        title=title, figures=f, rows=rows.rows(f, roles, SETTING), roles=tuple(roles)
    )


def test_the_sides_are_columns_of_one_table_with_their_verdicts() -> None:
    quiet = report.figures([sample(0.0), sample(10.0, plain=2_000)], sync_period_s=5.0)
    sides = [
        side("long polls (default)", watched(), [ALL]),
        side("--no-worker-watch", quiet, [ALL]),
    ]
    header, rule, *body = tables.render_markdown(sides).splitlines()
    assert header == "| metric | target | long polls (default) | --no-worker-watch |"
    assert rule == "|---|---|---|---|"
    cpu = next(line for line in body if line.startswith("| operator CPU per process, share"))
    assert cpu.endswith("| 10.0 % / 10.0 % PASS | 10.0 % / 10.0 % PASS |")
    held = next(line for line in body if line.startswith("| long polls held"))
    assert held.endswith("| 965 / 970 of 970 | 0 / 0 of 970 |")


def test_each_later_side_is_compared_with_the_first() -> None:
    one = side("1 process", shards(0.5, round_s=4.0), [ALL])
    two = side("2 shards", shards(0.15, 0.25), halves())
    (line,) = tables.render_ratios([one, two])
    assert line.startswith("`2 shards` against `1 process`: CPU of the busiest process 0.50x;")
    assert "CPU of every process together 0.80x" in line
    assert "sync round duration, median 0.50x" in line


def test_the_json_of_a_side_has_each_process_with_its_shard() -> None:
    found = tables.to_json(side("2 shards", shards(0.15, 0.25), halves()))
    processes = found["processes"]
    assert isinstance(processes, list)
    assert [(p["shard"], p["workers"], p["syncs"]) for p in processes] == [(1, 200, 2), (0, 100, 2)]
