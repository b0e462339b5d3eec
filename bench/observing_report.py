"""The figures of the observing benchmark, worked out from its samples, and the tables.

Pure: it takes the samples `bench.observing` took once a second on each side (the operator's
CPU time and RSS, the fake workers' counts of plain reads and long polls, the operator's own
Prometheus counters, the API requests the counting proxy saw) and returns the figures and the
rows with their targets (`bench.observing_tables` sets the sides next to each other). It reads
no clock and no file, and asserts nothing: a missed target is a FAIL in a cell.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CPU_TARGET = 0.20
"""The operator may use under 20 % of one core ..."""
RSS_TARGET_MB = 250.0
"""... and under 250 MB of RSS, observing 1,000 workers every 5 s."""
SYNC_COUNT = "agentworker_operator_sync_duration_seconds_count"
SYNC_SUM = "agentworker_operator_sync_duration_seconds_sum"
OBSERVE_COUNT = "agentworker_operator_observation_duration_seconds_count"
OBSERVE_SUM = "agentworker_operator_observation_duration_seconds_sum"
ANNOTATION_WRITES = "agentworker_operator_pod_annotation_writes_total"
OBSERVATION_FAILURES = "agentworker_operator_observation_failures_total"
PROCESS_CPU = "process_cpu_seconds_total"
CHANGE_COUNT = "agentworker_operator_change_to_decision_seconds_count"
CHANGE_SUM = "agentworker_operator_change_to_decision_seconds_sum"
POLL_ENDS = ("at_once", "on_change", "on_wait", "dropped", "refused")
"""How a long poll ended, as the fake workers count them (`bench.fake_workers.PollEnd`)."""

ApiCounts = Mapping[tuple[str, str], int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One look at the processes and counters, taken once a second during the window."""

    t_s: float
    """Monotonic seconds."""
    operator_cpu_s: float
    """user + system CPU seconds of the operator process so far."""
    operator_rss_mb: float
    fake_workers_cpu_s: float
    bench_cpu_s: float
    """This benchmark's own process (sampling, the API proxy, the node heartbeat)."""
    worker_requests: int
    """GET /worker requests the fake workers have answered so far: plain reads and polls."""
    worker_plain: int
    """Of those, the plain reads (no `after`), so far."""
    polls: Mapping[str, int]
    """Long polls answered (or refused) so far, by how they ended (`POLL_ENDS`)."""
    polls_held: int
    """Long polls the fake workers held at this moment."""
    worker_changes: int
    """Changes of the workers' decision views (generations moved) so far."""
    worker_connections: int
    """TCP connections those requests came on, so far."""
    metrics: Mapping[str, float]
    """The operator's /metrics, every sample's value summed by sample name."""
    api: ApiCounts
    """API requests the operator sent through the proxy so far, by (verb, resource)."""
    watch_events: Mapping[str, int]
    """Watch events the operator received so far, by resource."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """What the window shows."""

    window_s: float
    cpu_share: float
    """Operator CPU seconds per second of the window (1.0 = one core)."""
    cpu_share_by_period: tuple[float, ...]
    """The same over each sync period of the window."""
    reported_cpu_share: float | None
    """The same from the operator's own process_cpu_seconds_total (a cross-check)."""
    rss_mb: tuple[float, ...]
    syncs: int
    sync_durations_s: tuple[float, ...]
    """One per sync round (a round's own time when one second saw a single round end)."""
    observation_mean_s: float | None
    """Mean time to read one AgentWorker's 100 workers."""
    worker_requests: int
    worker_plain: int
    polls: dict[str, int]
    """Long polls in the window by how they ended, every one of `POLL_ENDS`."""
    polls_held: tuple[int, ...]
    """Long polls held, one per sample."""
    worker_changes: int
    change_decisions: int
    """Decisions a change heard on a long poll led to (change_to_decision_seconds_count)."""
    change_decision_mean_s: float | None
    worker_connections: int
    annotation_writes: int
    observation_failures: int
    api: dict[tuple[str, str], int]
    watch_events: dict[str, int]
    fake_workers_cpu_share: float
    bench_cpu_share: float


def _delta(first: Sample, last: Sample, name: str) -> float:
    return last.metrics.get(name, 0.0) - first.metrics.get(name, 0.0)


def _sync_durations(samples: Sequence[Sample]) -> tuple[float, ...]:
    durations: list[float] = []
    for before, after in itertools.pairwise(samples):
        rounds = round(_delta(before, after, SYNC_COUNT))
        if rounds > 0:
            durations += [_delta(before, after, SYNC_SUM) / rounds] * rounds
    return tuple(durations)


def figures(samples: Sequence[Sample], *, sync_period_s: float) -> Figures:
    """The figures of a window; `samples` in time order, at least two."""
    first, last = samples[0], samples[-1]
    window = last.t_s - first.t_s
    step = max(1, round(sync_period_s / max(window / (len(samples) - 1), 1e-9)))
    periods = [
        (b.operator_cpu_s - a.operator_cpu_s) / (b.t_s - a.t_s)
        for a, b in zip(samples[::step], samples[step::step], strict=False)
        if b.t_s > a.t_s
    ]
    reported = _delta(first, last, PROCESS_CPU) if PROCESS_CPU in last.metrics else None
    observed = _delta(first, last, OBSERVE_COUNT)
    decisions = _delta(first, last, CHANGE_COUNT)
    return Figures(
        window_s=window,
        cpu_share=(last.operator_cpu_s - first.operator_cpu_s) / window,
        cpu_share_by_period=tuple(periods),
        reported_cpu_share=None if reported is None else reported / window,
        rss_mb=tuple(s.operator_rss_mb for s in samples),
        syncs=round(_delta(first, last, SYNC_COUNT)),
        sync_durations_s=_sync_durations(samples),
        observation_mean_s=_delta(first, last, OBSERVE_SUM) / observed if observed else None,
        worker_requests=last.worker_requests - first.worker_requests,
        worker_plain=last.worker_plain - first.worker_plain,
        polls={end: last.polls.get(end, 0) - first.polls.get(end, 0) for end in POLL_ENDS},
        polls_held=tuple(s.polls_held for s in samples),
        worker_changes=last.worker_changes - first.worker_changes,
        change_decisions=round(decisions),
        change_decision_mean_s=_delta(first, last, CHANGE_SUM) / decisions if decisions else None,
        worker_connections=last.worker_connections - first.worker_connections,
        annotation_writes=round(_delta(first, last, ANNOTATION_WRITES)),
        observation_failures=round(_delta(first, last, OBSERVATION_FAILURES)),
        api={
            key: n - first.api.get(key, 0)
            for key, n in sorted(last.api.items())
            if n - first.api.get(key, 0)
        },
        watch_events={
            resource: n - first.watch_events.get(resource, 0)
            for resource, n in sorted(last.watch_events.items())
            if n - first.watch_events.get(resource, 0)
        },
        fake_workers_cpu_share=(last.fake_workers_cpu_s - first.fake_workers_cpu_s) / window,
        bench_cpu_share=(last.bench_cpu_s - first.bench_cpu_s) / window,
    )


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


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def per_sync(count: float, f: Figures) -> float | None:
    return count / f.syncs if f.syncs else None


def fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def _percent(share: float | None) -> str:
    return fmt(None if share is None else share * 100, "{:.1f} %")


def rows(f: Figures, *, workers: int, streaming: int, sync_period_s: float) -> list[Row]:
    """One side's table: the two targets first, then what explains them. `streaming`: how
    many of the `workers` serve the change stream (the others are never long-polled)."""
    rss_peak = max(f.rss_mb) if f.rss_mb else None
    rss_median = _median(f.rss_mb)
    period_median = _median(f.cpu_share_by_period)
    period_max = max(f.cpu_share_by_period) if f.cpu_share_by_period else None
    sync_median = _median(f.sync_durations_s)
    sync_max = max(f.sync_durations_s) if f.sync_durations_s else None
    api_total = sum(n for (verb, _), n in f.api.items() if verb != "WATCH")
    expected_rounds = f.window_s / sync_period_s
    return [
        Row(
            key="cpu_share",
            title="operator CPU, share of one core (whole window)",
            value=f.cpu_share,
            text=f"{f.cpu_share * 100:.1f} %",
            target=f"< {CPU_TARGET * 100:.0f} %",
            passed=f.cpu_share < CPU_TARGET,
            how="psutil cpu_times (user + system) of the agent-operator process at the window's "
            "ends, divided by the window's wall time",
        ),
        Row(
            key="rss_peak_mb",
            title="operator RSS, peak",
            value=rss_peak,
            text=fmt(rss_peak, "{:.1f} MB"),
            target=f"< {RSS_TARGET_MB:.0f} MB",
            passed=None if rss_peak is None else rss_peak < RSS_TARGET_MB,
            how="psutil memory_info().rss of the operator, sampled once a second; the highest",
        ),
        Row(
            key="rss_median_mb",
            title="operator RSS, median",
            value=rss_median,
            text=fmt(rss_median, "{:.1f} MB"),
            how="the same samples, their median",
        ),
        Row(
            key="cpu_share_period",
            title=f"operator CPU per {sync_period_s:g} s period, median / max",
            value=period_median,
            text=f"{_percent(period_median)} / {_percent(period_max)}",
            how="the same CPU time over each consecutive sync period of the window",
        ),
        Row(
            key="cpu_share_reported",
            title="  the same, from the operator's process_cpu_seconds_total",
            value=f.reported_cpu_share,
            text=_percent(f.reported_cpu_share),
            how="prometheus_client's process collector in the operator (a cross-check)",
        ),
        Row(
            key="syncs",
            title="sync rounds in the window",
            value=float(f.syncs),
            text=f"{f.syncs} (one per {f.window_s / f.syncs:.2f} s)" if f.syncs else "0",
            target=f"~{expected_rounds:.0f}",
            passed=f.syncs >= int(expected_rounds * 0.8),
            how="agentworker_operator_sync_duration_seconds_count, window end minus start: the "
            "periodic rounds over every AgentWorker only, not the rounds of one fleet that a "
            "change heard on a long poll starts",
        ),
        Row(
            key="sync_duration_s",
            title="sync round duration, median / max",
            value=sync_median,
            text=f"{fmt(sync_median, '{:.2f}')} / {fmt(sync_max, '{:.2f}')} s",
            how="agentworker_operator_sync_duration_seconds: sum increase / count increase "
            "between two samples (1 s apart, so nearly always one round); 3 of the 1,000 "
            "workers never answer, so a round lasts at least the 2 s scrape timeout",
        ),
        Row(
            key="observation_mean_s",
            title="one AgentWorker's 100 workers read, mean",
            value=f.observation_mean_s,
            text=fmt(f.observation_mean_s, "{:.3f} s"),
            how="agentworker_operator_observation_duration_seconds, sum / count over the window; "
            "with long polls, the rounds a change started count too, and they read no worker "
            "(they take what the polls brought), which lowers the mean",
        ),
        Row(
            key="worker_requests_per_s",
            title="plain GET /worker per second (fake workers' count)",
            value=f.worker_plain / f.window_s,
            text=f"{f.worker_plain / f.window_s:.1f}",
            target=f"~{workers / sync_period_s:.0f}",
            passed=abs(f.worker_plain / f.window_s * sync_period_s - workers) < workers * 0.2,
            how="requests without `after` counted by the fake worker server, window end minus "
            "start: the periodic rounds read every worker on both sides (the load moves no "
            "generation); with long polls, also the polls' first reads and their retries of "
            "the workers without the stream",
        ),
        Row(
            key="worker_requests_per_sync",
            title="plain GET /worker per sync round",
            value=per_sync(f.worker_plain, f),
            text=fmt(per_sync(f.worker_plain, f), "{:.0f}"),
            target=f"{workers}",
            how="the same count over the sync rounds in the window",
        ),
        *_poll_rows(f, streaming=streaming),
        Row(
            key="worker_connections_per_sync",
            title="new TCP connections to workers per sync round",
            value=per_sync(f.worker_connections, f),
            text=fmt(per_sync(f.worker_connections, f), "{:.1f}"),
            how="connections the fake workers saw a first request on; the operator keeps the "
            "others alive from round to round (a worker that timed out needs a new one)",
        ),
        Row(
            key="api_requests_per_sync",
            title="API requests per sync round (watches excluded)",
            value=per_sync(api_total, f),
            text=fmt(per_sync(api_total, f), "{:.1f}"),
            how="requests through the counting proxy between the operator and the API server "
            "(bench/api_proxy.py); by verb and resource below",
        ),
        Row(
            key="annotation_writes_per_sync",
            title="pod annotation patches per sync round",
            value=per_sync(f.annotation_writes, f),
            text=fmt(per_sync(f.annotation_writes, f), "{:.1f}"),
            how="agentworker_operator_pod_annotation_writes_total (a worker turned busy or idle)",
        ),
        Row(
            key="fake_workers_cpu_share",
            title="fake worker server CPU, share of one core",
            value=f.fake_workers_cpu_share,
            text=f"{f.fake_workers_cpu_share * 100:.1f} %",
            how="the one process that answers for all 1,000 workers (competes for the 2 cores)",
        ),
        Row(
            key="bench_cpu_share",
            title="this benchmark's process CPU, share of one core",
            value=f.bench_cpu_share,
            text=f"{f.bench_cpu_share * 100:.1f} %",
            how="sampling, the API proxy and the phantom node's heartbeat",
        ),
    ]


def _poll_rows(f: Figures, *, streaming: int) -> list[Row]:
    """The long polls: how many were answered and why, how many were held at a time."""
    answered = sum(f.polls[end] for end in ("at_once", "on_change", "on_wait"))
    held_median = _median([float(n) for n in f.polls_held])
    held_max = max(f.polls_held) if f.polls_held else None
    mean = f.change_decision_mean_s
    return [
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
            text=f"{fmt(held_median, '{:.0f}')} / {fmt(held_max, '{}')} of {streaming}",
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
            "new calls), counted by their http_api.Changes; the same fleet on both sides",
        ),
        Row(
            key="change_to_decision_s",
            title="a change heard -> the autoscaler's decision, count / mean",
            value=mean,
            text=f"{f.change_decisions} / {fmt(mean, '{:.3f} s')}",
            how="agentworker_operator_change_to_decision_seconds over the window (a change "
            "heard on a long poll; none without them: such a change waits for the next "
            "periodic round, up to a sync period later)",
        ),
    ]
