"""The figures of the observing benchmark, worked out from its samples.

Pure: it takes the samples `bench.observing` took once a second on each side (each operator
process's CPU time, RSS, open files and own Prometheus counters; the fake workers' counts of
plain reads and long polls; the API requests the counting proxy saw) and returns one side's
figures: each process's apart (a sharded side runs several) and what the processes share
(`bench.observing_rows` makes the table's rows of them). It reads no clock and no file, and
asserts nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
class OperatorSample:
    """One look at one operator process."""

    cpu_s: float
    """user + system CPU seconds of the process so far."""
    rss_mb: float
    fds: int
    """File descriptors it has open (sockets to the workers and the API server included)."""
    metrics: Mapping[str, float]
    """Its /metrics, every sample's value summed by sample name (over the labels)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One look at the processes and counters, taken once a second during the window."""

    t_s: float
    """Monotonic seconds."""
    operators: tuple[OperatorSample, ...]
    """The side's operator processes, in the same order in every sample."""
    fake_workers_cpu_s: float
    fake_workers_fds: int
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
    api: ApiCounts
    """API requests the operators sent through the proxy so far, by (verb, resource)."""
    watch_events: Mapping[str, int]
    """Watch events the operators received so far, by resource."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessFigures:
    """What the window shows of one operator process."""

    cpu_share: float
    """CPU seconds per second of the window (1.0 = one core)."""
    cpu_share_by_period: tuple[float, ...]
    """The same over each sync period of the window."""
    reported_cpu_share: float | None
    """The same from the process's own process_cpu_seconds_total (a cross-check)."""
    rss_mb: tuple[float, ...]
    fds: tuple[int, ...]
    syncs: int
    sync_durations_s: tuple[float, ...]
    """One per sync round (a round's own time when one second saw a single round end)."""
    observations: int
    """Reads of one AgentWorker's workers (observation_duration_seconds_count)."""
    observation_s: float
    """Their time, summed."""
    change_decisions: int
    """Decisions a change heard on a long poll led to (change_to_decision_seconds_count)."""
    change_decision_s: float
    """Their time from the change heard, summed."""
    annotation_writes: int
    observation_failures: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """What the window shows: each operator process's figures, and what they share."""

    window_s: float
    processes: tuple[ProcessFigures, ...]
    worker_requests: int
    worker_plain: int
    polls: dict[str, int]
    """Long polls in the window by how they ended, every one of `POLL_ENDS`."""
    polls_held: tuple[int, ...]
    """Long polls held, one per sample."""
    worker_changes: int
    worker_connections: int
    api: dict[tuple[str, str], int]
    watch_events: dict[str, int]
    fake_workers_cpu_share: float
    fake_workers_fds: tuple[int, ...]
    bench_cpu_share: float

    @property
    def cpu_share(self) -> float:
        """Every operator process's CPU together, share of one core."""
        return sum(p.cpu_share for p in self.processes)

    @property
    def rounds(self) -> float:
        """Sync rounds of the installation: each process's rounds, averaged (each round of a
        process covers its own shard, so N processes each doing one make one round)."""
        return sum(p.syncs for p in self.processes) / len(self.processes)

    @property
    def change_decisions(self) -> int:
        return sum(p.change_decisions for p in self.processes)

    @property
    def change_decision_mean_s(self) -> float | None:
        n = self.change_decisions
        return sum(p.change_decision_s for p in self.processes) / n if n else None

    @property
    def observation_mean_s(self) -> float | None:
        """Mean time to read one AgentWorker's workers, over every process."""
        n = sum(p.observations for p in self.processes)
        return sum(p.observation_s for p in self.processes) / n if n else None

    @property
    def annotation_writes(self) -> int:
        return sum(p.annotation_writes for p in self.processes)

    @property
    def observation_failures(self) -> int:
        return sum(p.observation_failures for p in self.processes)


def _delta(first: OperatorSample, last: OperatorSample, name: str) -> float:
    return last.metrics.get(name, 0.0) - first.metrics.get(name, 0.0)


def _sync_durations(process: Sequence[OperatorSample]) -> tuple[float, ...]:
    durations: list[float] = []
    for before, after in itertools.pairwise(process):
        rounds = round(_delta(before, after, SYNC_COUNT))
        if rounds > 0:
            durations += [_delta(before, after, SYNC_SUM) / rounds] * rounds
    return tuple(durations)


def process_figures(
    times: Sequence[float], process: Sequence[OperatorSample], *, sync_period_s: float
) -> ProcessFigures:
    """One process's figures from its samples, taken at monotonic `times` (at least two)."""
    first, last = process[0], process[-1]
    window = times[-1] - times[0]
    step = max(1, round(sync_period_s / max(window / (len(times) - 1), 1e-9)))
    ends = list(zip(times, process, strict=True))
    periods = [
        (b.cpu_s - a.cpu_s) / (tb - ta)
        for (ta, a), (tb, b) in zip(ends[::step], ends[step::step], strict=False)
        if tb > ta
    ]
    reported = _delta(first, last, PROCESS_CPU) if PROCESS_CPU in last.metrics else None
    return ProcessFigures(
        cpu_share=(last.cpu_s - first.cpu_s) / window,
        cpu_share_by_period=tuple(periods),
        reported_cpu_share=None if reported is None else reported / window,
        rss_mb=tuple(s.rss_mb for s in process),
        fds=tuple(s.fds for s in process),
        syncs=round(_delta(first, last, SYNC_COUNT)),
        sync_durations_s=_sync_durations(process),
        observations=round(_delta(first, last, OBSERVE_COUNT)),
        observation_s=_delta(first, last, OBSERVE_SUM),
        change_decisions=round(_delta(first, last, CHANGE_COUNT)),
        change_decision_s=_delta(first, last, CHANGE_SUM),
        annotation_writes=round(_delta(first, last, ANNOTATION_WRITES)),
        observation_failures=round(_delta(first, last, OBSERVATION_FAILURES)),
    )


def _increase(first: Mapping[str, int], last: Mapping[str, int]) -> dict[str, int]:
    return {k: n - first.get(k, 0) for k, n in sorted(last.items()) if n - first.get(k, 0)}


def figures(samples: Sequence[Sample], *, sync_period_s: float) -> Figures:
    """The figures of a window; `samples` in time order, at least two, each with the same
    operator processes."""
    first, last = samples[0], samples[-1]
    window = last.t_s - first.t_s
    times = [s.t_s for s in samples]
    return Figures(
        window_s=window,
        processes=tuple(
            process_figures(times, [s.operators[i] for s in samples], sync_period_s=sync_period_s)
            for i in range(len(first.operators))
        ),
        worker_requests=last.worker_requests - first.worker_requests,
        worker_plain=last.worker_plain - first.worker_plain,
        polls={end: last.polls.get(end, 0) - first.polls.get(end, 0) for end in POLL_ENDS},
        polls_held=tuple(s.polls_held for s in samples),
        worker_changes=last.worker_changes - first.worker_changes,
        worker_connections=last.worker_connections - first.worker_connections,
        api={
            key: n - first.api.get(key, 0)
            for key, n in sorted(last.api.items())
            if n - first.api.get(key, 0)
        },
        watch_events=_increase(first.watch_events, last.watch_events),
        fake_workers_cpu_share=(last.fake_workers_cpu_s - first.fake_workers_cpu_s) / window,
        fake_workers_fds=tuple(s.fake_workers_fds for s in samples),
        bench_cpu_share=(last.bench_cpu_s - first.bench_cpu_s) / window,
    )
