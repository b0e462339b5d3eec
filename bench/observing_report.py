"""The figures of the observing benchmark, worked out from its samples, and the tables.

Pure: it takes the samples `bench.observing` took once a second (the operator's CPU time and
RSS, the fake workers' request count, the operator's own Prometheus counters, the API requests
the counting proxy saw) and returns the figures, the rows with their targets, and the tables in
text and Markdown. It reads no clock and no file, and asserts nothing: a missed target is a FAIL
in a column.
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
    """GET /worker requests the fake workers have answered so far."""
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


def _per_sync(count: float, f: Figures) -> float | None:
    return count / f.syncs if f.syncs else None


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def _percent(share: float | None) -> str:
    return _fmt(None if share is None else share * 100, "{:.1f} %")


def rows(f: Figures, *, workers: int, sync_period_s: float) -> list[Row]:
    """The table: the two targets first, then what explains them."""
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
            text=_fmt(rss_peak, "{:.1f} MB"),
            target=f"< {RSS_TARGET_MB:.0f} MB",
            passed=None if rss_peak is None else rss_peak < RSS_TARGET_MB,
            how="psutil memory_info().rss of the operator, sampled once a second; the highest",
        ),
        Row(
            key="rss_median_mb",
            title="operator RSS, median",
            value=rss_median,
            text=_fmt(rss_median, "{:.1f} MB"),
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
            how="agentworker_operator_sync_duration_seconds_count, window end minus start",
        ),
        Row(
            key="sync_duration_s",
            title="sync round duration, median / max",
            value=sync_median,
            text=f"{_fmt(sync_median, '{:.2f}')} / {_fmt(sync_max, '{:.2f}')} s",
            how="agentworker_operator_sync_duration_seconds: sum increase / count increase "
            "between two samples (1 s apart, so nearly always one round); 3 of the 1,000 "
            "workers never answer, so a round lasts at least the 2 s scrape timeout",
        ),
        Row(
            key="observation_mean_s",
            title="one AgentWorker's 100 workers read, mean",
            value=f.observation_mean_s,
            text=_fmt(f.observation_mean_s, "{:.3f} s"),
            how="agentworker_operator_observation_duration_seconds, sum / count over the window",
        ),
        Row(
            key="worker_requests_per_s",
            title="GET /worker per second (fake workers' count)",
            value=f.worker_requests / f.window_s,
            text=f"{f.worker_requests / f.window_s:.1f}",
            target=f"~{workers / sync_period_s:.0f}",
            passed=abs(f.worker_requests / f.window_s * sync_period_s - workers) < workers * 0.2,
            how="requests counted by the fake worker server, window end minus start",
        ),
        Row(
            key="worker_requests_per_sync",
            title="GET /worker per sync round",
            value=_per_sync(f.worker_requests, f),
            text=_fmt(_per_sync(f.worker_requests, f), "{:.0f}"),
            target=f"{workers}",
            how="the same count over the sync rounds in the window",
        ),
        Row(
            key="worker_connections_per_sync",
            title="new TCP connections to workers per sync round",
            value=_per_sync(f.worker_connections, f),
            text=_fmt(_per_sync(f.worker_connections, f), "{:.1f}"),
            how="connections the fake workers saw a first request on; the operator keeps the "
            "others alive from round to round (a worker that timed out needs a new one)",
        ),
        Row(
            key="api_requests_per_sync",
            title="API requests per sync round (watches excluded)",
            value=_per_sync(api_total, f),
            text=_fmt(_per_sync(api_total, f), "{:.1f}"),
            how="requests through the counting proxy between the operator and the API server "
            "(bench/api_proxy.py); by verb and resource below",
        ),
        Row(
            key="annotation_writes_per_sync",
            title="pod annotation patches per sync round",
            value=_per_sync(f.annotation_writes, f),
            text=_fmt(_per_sync(f.annotation_writes, f), "{:.1f}"),
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


HEADER = ("metric", "measured", "target", "pass")


def _cells(row: Row) -> tuple[str, str, str, str]:
    verdict = {True: "PASS", False: "FAIL", None: "-"}[row.passed]
    return row.title, row.text, row.target or "-", verdict


def render_text(table: Sequence[Row]) -> str:
    """A fixed-width table for the terminal."""
    lines = [HEADER, *(_cells(r) for r in table)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


def render_markdown(table: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in table]
    return "\n".join(lines)


def render_api_markdown(f: Figures) -> str:
    """The operator's API requests in the window, by verb and resource, then watch events."""
    lines = ["| verb | resource | requests | per sync round |", "|---|---|---|---|"]
    for (verb, resource), n in sorted(f.api.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"| {verb} | {resource} | {n} | {_fmt(_per_sync(n, f), '{:.2f}')} |")
    for resource, n in sorted(f.watch_events.items(), key=lambda item: (-item[1], item[0])):
        per = _fmt(_per_sync(n, f), "{:.2f}")
        lines.append(f"| (watch event received) | {resource} | {n} | {per} |")
    return "\n".join(lines)


def to_json(f: Figures, table: Sequence[Row]) -> dict[str, object]:
    """The figures and the rows, ready for json.dumps."""
    return {
        "rows": {
            r.key: {
                "title": r.title.strip(),
                "value": r.value,
                "text": r.text,
                "target": r.target or None,
                "passed": r.passed,
                "how": r.how,
            }
            for r in table
        },
        "window_s": f.window_s,
        "cpu_share_by_period": list(f.cpu_share_by_period),
        "rss_mb_samples": list(f.rss_mb),
        "sync_durations_s": list(f.sync_durations_s),
        "worker_requests": f.worker_requests,
        "worker_connections": f.worker_connections,
        "observation_failures": f.observation_failures,
        "annotation_writes": f.annotation_writes,
        "watch_events": f.watch_events,
        "api_requests": [
            {"verb": verb, "resource": resource, "requests": n}
            for (verb, resource), n in f.api.items()
        ],
    }
