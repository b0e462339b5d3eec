"""What the miss-rate headroom is derived from, fed by each sync round's observation.

`headroom` owns the arithmetic of a miss-rate target (`spec.autoscaling.headroom.missRate`);
this module owns its inputs, from what the operator sees of a fleet round after round:
- the job starts (`headroom.ArrivalRate`): job ids a worker lists that no earlier round saw,
  on a worker whose jobs were known before (so an operator that starts, or a worker read for
  the first time, counts the calls already on as none); a worker whose document lists no jobs
  (the official livekit-agents worker) counts the rise of its active jobs instead, a lower
  bound;
- the mean call length (`CallLengths`): from the round a counted job was first seen to the
  round its worker, read, no longer lists it (both late by up to a round, so the difference is
  not); a job on a worker that went away or restarted is lost, not ended, and counts for none;
- the reaction time (`headroom.ReactionTime`): from the round whose scale-up was applied to the
  round a new worker (one the scale-up's round did not see) is first seen registered.
`Estimates` holds them as one frozen value that the sync loop keeps per fleet between rounds,
in memory only: an operator that starts, or a leader that changes, starts from the defaults.
It is pure: no I/O, no clock (times are arguments), no kopf, kubernetes, aiohttp or
prometheus_client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from agentworker_operator import headroom
from agentworker_operator import spec as specs
from agentworker_operator.observation import Worker, WorkerState

MAX_REACTION_S = 900.0
"""The longest reaction a scale-up counts for, in seconds (the Cluster Autoscaler's default
max-node-provision-time): a scale-up held by a quota or an empty cloud for an hour says
nothing of the next one, and must not hold the headroom wide for twenty more."""
_REGISTERED = (WorkerState.AVAILABLE, WorkerState.FULL)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallLengths:
    """The mean length of the latest calls that ended."""

    keep: int = 100
    """How many of the latest calls count."""
    min_samples: int = 20
    """Calls that must have ended before the mean is known."""
    samples_s: tuple[float, ...] = ()
    """Their lengths, oldest first, in seconds."""

    def ended(self, seconds: float) -> CallLengths:
        """These lengths with one more call, the oldest beyond `keep` dropped."""
        return replace(self, samples_s=(*self.samples_s, max(0.0, seconds))[-self.keep :])

    @property
    def mean_s(self) -> float | None:
        """The mean length in seconds; None until `min_samples` calls ended (or all of them
        lasted less than a round, which a mean of 0 cannot stand for)."""
        if len(self.samples_s) < self.min_samples:
            return None
        mean = sum(self.samples_s) / len(self.samples_s)
        return mean if mean > 0.0 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SeenJob:
    """A job a worker listed."""

    pod: str
    first_seen_s: float
    """The round it was first listed."""
    counted: bool
    """Counted as a start: its length is known when it ends."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SeenPod:
    """A worker pod as the latest round saw it."""

    restarts: int
    """Its container restarts then: a rise means its jobs died, they did not end."""
    active_jobs: int
    """The jobs it reported last (for a worker that lists none)."""
    jobs_known: bool
    """Its jobs are known: read in a round, or it had none (starting). A job it lists that was
    not known before is a start only then."""
    registered: bool
    """Seen registered (available or full) in a round."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleUp:
    """A scale-up whose new workers have not all registered yet."""

    at_s: float
    """When it was decided."""
    awaited: int
    """New workers still to register."""
    before: frozenset[str]
    """The pods its round saw: none of them is one of its new workers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimates:
    """A fleet's arrival rate, reaction time and call lengths, and what they are fed from."""

    arrivals: headroom.ArrivalRate = field(default_factory=headroom.ArrivalRate)
    """The job starts' rate (30 s and 15 min windows, the higher planned for)."""
    reaction: headroom.ReactionTime = field(default_factory=headroom.ReactionTime)
    """The measured scale-ups (60 s assumed until three are)."""
    lengths: CallLengths = field(default_factory=CallLengths)
    """The lengths of the latest calls that ended."""
    jobs: Mapping[str, SeenJob] = field(default_factory=dict)
    """The jobs the live workers listed, by id: no more than the calls on them."""
    pods: Mapping[str, SeenPod] = field(default_factory=dict)
    """The worker pods of the latest round, by name."""
    scale_ups: tuple[ScaleUp, ...] = ()
    """The scale-ups still awaiting workers, oldest first."""

    def observed(
        self, workers: Sequence[Worker], *, now_s: float, desired: int | None
    ) -> Estimates:
        """These estimates after a round that saw `workers` at `now_s`, the fleet asked for
        `desired` replicas (None: the operator does not scale it, and awaits no worker)."""
        starts, lengths = 0, self.lengths
        jobs: dict[str, SeenJob] = {}
        pods: dict[str, SeenPod] = {}
        by_pod: dict[str, list[tuple[str, SeenJob]]] = {}
        for job_id, job in self.jobs.items():
            by_pod.setdefault(job.pod, []).append((job_id, job))
        for worker in workers:
            name = worker.pod.name
            seen = _Seen(self.pods.get(name), worker, now_s)
            starts += seen.count(by_pod.get(name, []), jobs)
            for length in seen.ended(by_pod.get(name, [])):
                lengths = lengths.ended(length)
            pods[name] = seen.pod()
        newly = sorted(
            w.pod.name
            for w in workers
            if w.state in _REGISTERED
            and not w.pod.terminating
            and not (w.pod.name in self.pods and self.pods[w.pod.name].registered)
        )
        reaction, scale_ups = _measured(self.reaction, self.scale_ups, newly, now_s)
        live = sum(1 for w in workers if pods[w.pod.name].registered and not w.pod.terminating)
        return replace(
            self,
            arrivals=self.arrivals.observed(now_s, starts),
            reaction=reaction,
            lengths=lengths,
            jobs=jobs,
            pods=pods,
            scale_ups=_awaiting(scale_ups, max(0, desired - live) if desired is not None else 0),
        )

    def scaled_up(self, *, at_s: float, added: int, pods: Iterable[str]) -> Estimates:
        """These estimates with a scale-up of `added` workers, applied, decided at `at_s`
        in a round that saw `pods`."""
        if added <= 0:
            return self
        up = ScaleUp(at_s=at_s, awaited=added, before=frozenset(pods))
        return replace(self, scale_ups=(*self.scale_ups, up))

    def waiting_s(self, now_s: float) -> float:
        """How long the oldest scale-up still awaiting workers has waited (0 without one)."""
        if not self.scale_ups:
            return 0.0
        return min(max(0.0, now_s - self.scale_ups[0].at_s), MAX_REACTION_S)

    def warm_headroom(
        self,
        autoscaling: specs.Autoscaling,
        *,
        now_s: float,
        busy_calls: int,
        slots_per_worker: int,
        round_s: float,
    ) -> headroom.WarmHeadroom | None:
        """The warm headroom `autoscaling.headroom.missRate` asks for now; None without a
        target (or with autoscaling off).

        `busy_calls`: the calls on the serving workers. `round_s`: the sync period, added to
        the measured reaction (a slot taken just after a round is seen at the next one). The
        mean call length is used only while the scale-down's stabilization window is at least
        the reaction time: it counts on the slots calls free staying, which only a window
        that long keeps (`headroom.derive`); otherwise every call is taken to outlast the
        reaction time, which asks for more headroom, never less."""
        miss_rate = autoscaling.headroom.miss_rate
        if not autoscaling.enabled or miss_rate is None:
            return None
        reaction_s = self.reaction.conservative_s(waiting_s=self.waiting_s(now_s)) + round_s
        keeps_freed = autoscaling.scale_down.stabilization_window_s >= reaction_s
        return headroom.derive(
            arrival_rate_per_s=self.arrivals.per_s,
            reaction_s=reaction_s,
            miss_rate=miss_rate,
            slots_per_worker=max(1, slots_per_worker),
            max_workers=autoscaling.max_replicas,
            busy_calls=busy_calls,
            mean_call_s=self.lengths.mean_s if keeps_freed else None,
        )


def serving_calls(workers: Sequence[Worker]) -> int:
    """The calls on the workers that take calls (available and full, not being deleted): the
    ones whose end frees a slot that stays."""
    return sum(w.active_jobs for w in workers if w.state in _REGISTERED and not w.pod.terminating)


def _measured(
    reaction: headroom.ReactionTime, scale_ups: Sequence[ScaleUp], newly: list[str], now_s: float
) -> tuple[headroom.ReactionTime, list[ScaleUp]]:
    """The reaction time with a measurement for each worker registered for the first time
    that is the new worker of a scale-up (the oldest that did not see its pod), and the
    scale-ups still awaiting workers after them."""
    awaiting = list(scale_ups)
    for name in newly:
        for i, up in enumerate(awaiting):
            if name not in up.before:
                reaction = reaction.measured(min(max(0.0, now_s - up.at_s), MAX_REACTION_S))
                awaiting[i] = replace(up, awaited=up.awaited - 1)
                break
        awaiting = [up for up in awaiting if up.awaited > 0]
    return reaction, awaiting


def _awaiting(scale_ups: list[ScaleUp], most: int) -> tuple[ScaleUp, ...]:
    """The scale-ups with at most `most` workers awaited, the newest cut first: a scale-down
    (or a spec edit) since then removed workers that had not registered yet."""
    kept: list[ScaleUp] = []
    for up in scale_ups:
        awaited = min(up.awaited, most - sum(k.awaited for k in kept))
        if awaited <= 0:
            break
        kept.append(replace(up, awaited=awaited))
    return tuple(kept)


@dataclass(slots=True)
class _Seen:
    """One worker in one round, against what the round before saw of it."""

    before: SeenPod | None
    worker: Worker
    now_s: float

    @property
    def restarted(self) -> bool:
        return self.before is not None and self.worker.pod.restarts > self.before.restarts

    @property
    def jobs_known(self) -> bool:
        """Its jobs were known before this round (a start is a job not known then)."""
        return self.before is not None and self.before.jobs_known and not self.restarted

    def count(self, earlier: list[tuple[str, SeenJob]], jobs: dict[str, SeenJob]) -> int:
        """The starts this worker shows, its jobs added to `jobs`."""
        report = self.worker.report
        if report is None:  # not read: its jobs stay as they were
            jobs.update(earlier)
            return 0
        if report.job_ids is None:  # the official worker lists no jobs: the count's rise
            if not self.jobs_known or self.before is None:
                return 0
            return max(0, report.active_jobs - self.before.active_jobs)
        known = dict(earlier)
        starts = 0
        for job_id in report.job_ids:
            job = known.get(job_id)
            if job is None:
                job = SeenJob(pod=self.worker.pod.name, first_seen_s=self.now_s, counted=False)
                if self.jobs_known:
                    job, starts = replace(job, counted=True), starts + 1
            jobs[job_id] = job
        return starts

    def ended(self, earlier: list[tuple[str, SeenJob]]) -> list[float]:
        """The lengths of this worker's counted jobs that ended since the round before."""
        report = self.worker.report
        if report is None or report.job_ids is None or self.restarted:
            return []
        listed = set(report.job_ids)
        return [
            self.now_s - job.first_seen_s
            for job_id, job in earlier
            if job.counted and job_id not in listed
        ]

    def pod(self) -> SeenPod:
        report, before = self.worker.report, self.before
        starting = self.worker.state is WorkerState.STARTING and report is None
        if report is not None:
            active_jobs = report.active_jobs
        else:
            active_jobs = before.active_jobs if before is not None else 0
        return SeenPod(
            restarts=self.worker.pod.restarts,
            active_jobs=active_jobs,
            jobs_known=report is not None or starting or self.jobs_known,
            registered=self.worker.state in _REGISTERED
            or (before is not None and before.registered),
        )
