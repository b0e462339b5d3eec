"""The rows of the observing benchmark's table: one side's figures against their targets.

Pure: it takes a side's figures (`bench.observing_report`), what each of its operator processes
handles (`bench.observing_layout.Role`) and the run's setting, and returns the rows, the same
keys in the same order for every side (`bench.observing_tables` sets the sides next to each
other). A side of several processes (shards) is judged per process: the targets are one
operator process's. It reads no clock and no file, and asserts nothing: a missed target is a
FAIL in a cell.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.observing_layout import Role
from bench.observing_report import Figures, ProcessFigures

CPU_TARGET = 0.20
"""An operator process may use under 20 % of one core ..."""
RSS_TARGET_MB = 250.0
"""... and under 250 MB of RSS, observing its workers every 5 s."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """What a run's figures are judged against."""

    workers: int
    """Fake workers in the fleet, every side's processes together."""
    workers_per_agentworker: int
    streaming: int
    """How many of the workers serve the change stream (the others are never long-polled)."""
    sync_period_s: float
    fd_limit: int
    """The soft limit of open files (`ulimit -n`) each process of the run has."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One line of the table."""

    key: str
    title: str
    value: float | None
    text: str
    target: str = ""
    passed: bool | None = None
    how: str = ""


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def percent(share: float | None) -> str:
    return fmt(None if share is None else share * 100, "{:.1f} %")


def per_round(count: float, f: Figures) -> float | None:
    """`count` per sync round of the installation (`Figures.rounds`)."""
    return count / f.rounds if f.rounds else None


def label(role: Role) -> str:
    """How a process is named in a cell: its shard, or "all" when it is the only one."""
    return "all" if role.shards == 1 else f"shard {role.shard}"


def by_process(f: Figures, roles: Sequence[Role], cell: Callable[[ProcessFigures], str]) -> str:
    """One cell listing every process by its shard: "shard 0: ..., shard 1: ..." (or
    "all: ...")."""
    pairs = sorted(zip(roles, f.processes, strict=True), key=lambda pair: pair[0].shard)
    return ", ".join(f"{label(role)}: {cell(p)}" for role, p in pairs)


def _max(values: Sequence[float]) -> float | None:
    return max(values) if values else None


def rows(f: Figures, roles: Sequence[Role], setting: Setting) -> list[Row]:
    """One side's table: its processes, the per-process targets, then what explains them.
    `roles`: what each process of `f.processes` handles, in the same order."""
    return [*_process_rows(f, roles, setting), *_worker_rows(f, setting), *_cost_rows(f, setting)]


def _agentworkers(role: Role) -> str:
    n = len(role.agentworkers)
    return f"{n} AgentWorker{'' if n == 1 else 's'}"


def _split_text(roles: Sequence[Role]) -> str:
    if len(roles) == 1 and roles[0].shards == 1:
        (only,) = roles
        return f"1 (all {_agentworkers(only)}, {only.workers:,} workers)"
    shares = ", ".join(
        f"shard {r.shard}: {_agentworkers(r)}, {r.workers:,} workers"
        for r in sorted(roles, key=lambda role: role.shard)
    )
    return f"{len(roles)} ({shares})"


def _process_rows(f: Figures, roles: Sequence[Role], setting: Setting) -> list[Row]:
    """The processes, and the targets each one is held to: CPU, RSS, rounds on time."""
    shares = [p.cpu_share for p in f.processes]
    cpu_max = max(shares)
    periods = [share for p in f.processes for share in p.cpu_share_by_period]
    reported = [p.reported_cpu_share for p in f.processes]
    reported_sum = None if None in reported else sum(r for r in reported if r is not None)
    peaks = [max(p.rss_mb) for p in f.processes if p.rss_mb]
    medians = [m for p in f.processes if (m := median(p.rss_mb)) is not None]
    expected = f.window_s / setting.sync_period_s
    on_time = all(p.syncs >= int(expected * 0.8) for p in f.processes)
    return [
        Row(
            key="processes",
            title="operator processes (shard: AgentWorkers, workers)",
            value=float(len(f.processes)),
            text=_split_text(roles),
            how="a sharded side starts its processes at once with --shards N; each holds one "
            "shard's Lease (its agentworker_operator_shard metric) and handles the "
            "AgentWorkers agentworker_operator.sharding.shard_of puts in it, checked before "
            "and after the window from the AgentWorkers each one's metrics name",
        ),
        Row(
            key="cpu_share",
            title="operator CPU per process, share of one core (whole window): median / max",
            value=cpu_max,
            text=f"{percent(median(shares))} / {percent(cpu_max)}",
            target=f"< {CPU_TARGET * 100:.0f} %",
            passed=cpu_max < CPU_TARGET,
            how="psutil cpu_times (user + system) of each agent-operator process at the "
            "window's ends, divided by the window's wall time; the verdict is the busiest "
            "process's",
        ),
        Row(
            key="cpu_share_by_process",
            title="  by process",
            value=None,
            text=by_process(f, roles, lambda p: percent(p.cpu_share)),
            how="the same, each process apart",
        ),
        Row(
            key="cpu_share_sum",
            title="operator CPU, every process together",
            value=f.cpu_share,
            text=percent(f.cpu_share),
            how="the processes' shares added: what the installation costs (above 100 % needs "
            "more than one core)",
        ),
        Row(
            key="cpu_share_period",
            title=f"operator CPU per process per {setting.sync_period_s:g} s period, median / max",
            value=median(periods),
            text=f"{percent(median(periods))} / {percent(_max(periods))}",
            how="each process's CPU time over each consecutive sync period of the window, the "
            "periods of every process together",
        ),
        Row(
            key="cpu_share_reported",
            title="  every process together, from process_cpu_seconds_total",
            value=reported_sum,
            text=percent(reported_sum),
            how="prometheus_client's process collector in each operator (a cross-check)",
        ),
        Row(
            key="rss_peak_mb",
            title="operator RSS per process, peak",
            value=_max(peaks),
            text=fmt(_max(peaks), "{:.1f} MB"),
            target=f"< {RSS_TARGET_MB:.0f} MB",
            passed=None if not peaks else max(peaks) < RSS_TARGET_MB,
            how="psutil memory_info().rss of each operator process, sampled once a second; "
            "the highest of any process",
        ),
        Row(
            key="rss_median_mb",
            title="operator RSS, median by process; together",
            value=_max(medians),
            text=by_process(f, roles, lambda p: fmt(median(p.rss_mb), "{:.1f} MB"))
            + f"; {sum(medians):.1f} MB",
            how="the same samples, each process's median, and the medians added",
        ),
        Row(
            key="syncs",
            title="sync rounds in the window, by process",
            value=f.rounds,
            text=by_process(f, roles, lambda p: f"{p.syncs}"),
            target=f"~{expected:.0f} each",
            passed=on_time,
            how="agentworker_operator_sync_duration_seconds_count of each process, window end "
            "minus start: the periodic rounds over every AgentWorker of its shard only, not "
            "the rounds of one fleet that a change heard on a long poll starts; a round that "
            "outlasts the sync period delays the next (FAIL: a process made under 80 %)",
        ),
        *_duration_rows(f, roles, setting),
    ]


def _duration_rows(f: Figures, roles: Sequence[Role], setting: Setting) -> list[Row]:
    durations = [d for p in f.processes for d in p.sync_durations_s]
    late = sum(1 for d in durations if d > setting.sync_period_s)
    pooled = median(durations)

    def own(p: ProcessFigures) -> str:
        return (
            f"{fmt(median(p.sync_durations_s), '{:.2f}')} / "
            f"{fmt(_max(p.sync_durations_s), '{:.2f}')} s"
        )

    per = setting.workers_per_agentworker
    return [
        Row(
            key="sync_duration_s",
            title="sync round duration, median / max (rounds over the period)",
            value=pooled,
            text=f"{fmt(pooled, '{:.2f}')} / {fmt(_max(durations), '{:.2f}')} s "
            f"({late} of {len(durations)} over {setting.sync_period_s:g} s)",
            how="agentworker_operator_sync_duration_seconds of each process: sum increase / "
            "count increase between two samples (1 s apart, so nearly always one round), the "
            "rounds of every process together; 1 % of the workers never answer, so a round "
            "lasts at least the 2 s scrape timeout",
        ),
        Row(
            key="sync_duration_by_process",
            title="  by process, median / max",
            value=None,
            text=by_process(f, roles, own),
            how="the same, each process apart",
        ),
        Row(
            key="observation_mean_s",
            title=f"one AgentWorker's {per} workers read, mean",
            value=f.observation_mean_s,
            text=fmt(f.observation_mean_s, "{:.3f} s"),
            how="agentworker_operator_observation_duration_seconds, sum / count over the window "
            "and the processes; with long polls, the rounds a change started count too, and "
            "they read no worker (they take what the polls brought), which lowers the mean",
        ),
    ]


def _worker_rows(f: Figures, setting: Setting) -> list[Row]:
    """The workers' side: plain reads, long polls, changes and how soon they were decided."""
    workers, period = setting.workers, setting.sync_period_s
    plain_per_s = f.worker_plain / f.window_s
    answered = sum(f.polls[end] for end in ("at_once", "on_change", "on_wait"))
    held_median = median([float(n) for n in f.polls_held])
    mean = f.change_decision_mean_s
    streaming = setting.streaming
    return [
        Row(
            key="worker_requests_per_s",
            title="plain GET /worker per second (fake workers' count)",
            value=plain_per_s,
            text=f"{plain_per_s:.1f}",
            target=f"~{workers / period:.0f}",
            passed=abs(plain_per_s * period - workers) < workers * 0.2,
            how="requests without `after` counted by the fake worker server, window end minus "
            "start: the periodic rounds read every worker on both sides (the load moves no "
            "generation); with long polls, also the polls' first reads and their retries of "
            "the workers without the stream",
        ),
        Row(
            key="worker_requests_per_sync",
            title="plain GET /worker per sync round",
            value=per_round(f.worker_plain, f),
            text=fmt(per_round(f.worker_plain, f), "{:.0f}"),
            target=f"{workers}",
            how="the same count over the installation's sync rounds in the window (each "
            "process's rounds, averaged over the processes: each reads its own shard)",
        ),
        Row(
            key="poll_answers_per_s",
            title="long poll answers per second",
            value=answered / f.window_s,
            text=f"{answered / f.window_s:.1f} (window: {f.polls['on_change']} on a change, "
            f"{f.polls['at_once']} at once, {f.polls['on_wait']} wait ran out)",
            how="GET /worker?after= answered by the fake worker server in the window, by why: "
            "the worker's generation moved while held, the poll's `after` or `instance` was "
            "not current, or its wait (the operator asks 25 s) ran out with nothing new",
        ),
        Row(
            key="polls_held",
            title="long polls held at a time, median / max",
            value=held_median,
            text=f"{fmt(held_median, '{:.0f}')} / {fmt(_max(f.polls_held), '{}')} of {streaming}",
            how=f"polls the fake worker server held at each sample; {streaming} workers serve "
            "the change stream (the official worker and the faults do not)",
        ),
        Row(
            key="polls_refused",
            title="long polls refused (400) / dropped by the client",
            value=float(f.polls["refused"]),
            text=f"{f.polls['refused']} / {f.polls['dropped']}",
            target="0 / -",
            passed=f.polls["refused"] == 0,
            how="a refused poll had parameters the runtime's parse_poll rejects; a dropped one "
            "was held until the operator gave up on it (its timeout, or a pod it stopped "
            "following)",
        ),
        Row(
            key="worker_changes",
            title="changes of the workers (generations moved)",
            value=float(f.worker_changes),
            text=f"{f.worker_changes}",
            how="decision-view changes of the fake workers in the window (the changing workers' "
            "new calls), counted by their http_api.Changes; the same fleet on every side",
        ),
        Row(
            key="change_to_decision_s",
            title="a change heard -> the autoscaler's decision, count / mean",
            value=mean,
            text=f"{f.change_decisions} / {fmt(mean, '{:.3f} s')}",
            how="agentworker_operator_change_to_decision_seconds over the window, every "
            "process's (a change heard on a long poll; none without them: such a change waits "
            "for the next periodic round, up to a sync period later)",
        ),
    ]


def _cost_rows(f: Figures, setting: Setting) -> list[Row]:
    """What the rounds cost besides: connections, API requests, annotation patches, files
    open, and the CPU of the fake workers and of the benchmark itself."""
    api_total = sum(n for (verb, _), n in f.api.items() if verb != "WATCH")
    fds = max(max(p.fds, default=0) for p in f.processes)
    fake_fds = max(f.fake_workers_fds, default=0)
    return [
        Row(
            key="worker_connections_per_sync",
            title="new TCP connections to workers per sync round",
            value=per_round(f.worker_connections, f),
            text=fmt(per_round(f.worker_connections, f), "{:.1f}"),
            how="connections the fake workers saw a first request on; the operator keeps the "
            "others alive from round to round (a worker that timed out needs a new one)",
        ),
        Row(
            key="api_requests_per_sync",
            title="API requests per sync round (watches excluded)",
            value=per_round(api_total, f),
            text=fmt(per_round(api_total, f), "{:.1f}"),
            how="requests of every process through the counting proxy between the operators "
            "and the API server (bench/api_proxy.py); by verb and resource below",
        ),
        Row(
            key="annotation_writes_per_sync",
            title="pod annotation patches per sync round",
            value=per_round(f.annotation_writes, f),
            text=fmt(per_round(f.annotation_writes, f), "{:.1f}"),
            how="agentworker_operator_pod_annotation_writes_total (a worker turned busy or idle)",
        ),
        Row(
            key="open_files",
            title="open files, max: an operator process / the fake worker server",
            value=float(max(fds, fake_fds)),
            text=f"{fds:,} / {fake_fds:,}",
            target=f"< {setting.fd_limit:,}",
            passed=max(fds, fake_fds) < setting.fd_limit,
            how="psutil num_fds of each process once a second, the highest (each worker's "
            "kept-alive connection and held poll is one; the fake worker server also listens "
            "on every worker's address); the target is `ulimit -n`",
        ),
        Row(
            key="fake_workers_cpu_share",
            title="fake worker server CPU, share of one core",
            value=f.fake_workers_cpu_share,
            text=percent(f.fake_workers_cpu_share),
            how=f"the one process that answers for all {setting.workers:,} workers (competes "
            "for the 2 cores)",
        ),
        Row(
            key="bench_cpu_share",
            title="this benchmark's process CPU, share of one core",
            value=f.bench_cpu_share,
            text=percent(f.bench_cpu_share),
            how="sampling, the API proxy and the phantom node's heartbeat",
        ),
    ]
