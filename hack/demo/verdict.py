"""The demo's verdict: how each call went, how fast the fleet reacted, and the summary.

Owns what counts as a completed call (the agent's ledger and its caller agree), when the fleet
needed more workers (the load of its serving workers above target, or too few warm ones), the
reaction of every scale-up, and the `Summary` with the problems that make `make demo` fail.
Pure: no I/O, no clock, no environment; times are Unix seconds in, offsets out.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hack.demo.timeline import Sample, ScaleEvent, on_line


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The fleet's settings that say when it needs more workers."""

    target_load: float
    """spec.autoscaling.targetLoad."""
    min_available: int
    """spec.autoscaling.minAvailableWorkers: warm workers kept below their threshold."""
    load_threshold: float
    """spec.loadThreshold: a worker above it is full."""
    calls_per_worker: float
    """The agent's load is calls / calls_per_worker."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction:
    """One scale-up, from the fleet needing it to the new workers Ready (Unix times)."""

    event: ScaleEvent
    asked_at: float
    """When the fleet began to need more workers (`asks_for_more`), in the stretch before
    the decision."""
    ready_at: float | None
    """When the Deployment first had as many ready workers as the scale-up asked for."""

    @property
    def ready_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.asked_at


def asks_for_more(
    records: Sequence[Mapping[str, Any]], sample: Sample | None, t: float, policy: Policy
) -> bool:
    """Whether the fleet needed more workers at `t`: the mean load of its serving workers above
    target, or fewer warm (not full) workers than minAvailableWorkers. The calls and the worker
    holding each come from the agent's ledger (exact); the workers from the last sample."""
    by_worker: dict[str, int] = {}
    for start in on_line(records, t):
        pod = str(start.get("pod_ip", ""))
        by_worker[pod] = by_worker.get(pod, 0) + 1
    serving = max(sample.ready if sample else 0, len(by_worker))
    if not serving:
        return False
    load = sum(by_worker.values()) / (policy.calls_per_worker * serving)
    full = sum(1 for n in by_worker.values() if n / policy.calls_per_worker > policy.load_threshold)
    warm = max(sample.desired if sample else 0, serving) - full
    return load > policy.target_load or warm < policy.min_available


def _sample_at(samples: Sequence[Sample], t: float) -> Sample | None:
    return next((s for s in reversed(samples) if s.t <= t), None)


def reactions(
    samples: Sequence[Sample],
    events: Sequence[ScaleEvent],
    records: Sequence[Mapping[str, Any]],
    policy: Policy,
) -> tuple[Reaction, ...]:
    """Each scale-up with when the fleet began to need it and when its workers were Ready.

    The need is checked at every call's start and end and every sample up to the Event (whose
    time the API server cut to the second) and back while it holds, but no earlier than the
    scale-up before."""
    moments = sorted(
        {float(r.get("t", 0.0)) for r in records if r.get("event") in ("start", "end")}
        | {s.t for s in samples}
    )
    found = []
    previous = float("-inf")
    for event in (e for e in events if e.up):
        asked = event.t
        for moment in reversed([m for m in moments if previous < m < event.t + 1.0]):
            if asks_for_more(records, _sample_at(samples, moment), moment, policy):
                asked = min(asked, moment)
            elif moment < event.t:
                break
        previous = event.t
        want = event.to_replicas
        ready = next(
            (s.t for s in samples if s.t >= event.t and want is not None and s.ready >= want),
            None,
        )
        found.append(Reaction(event=event, asked_at=asked, ready_at=ready))
    return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallVerdict:
    """How one call of the plan went."""

    room: str
    started: bool
    """The agent wrote its start line: a worker took the call."""
    ended_how: str | None
    """The agent's end line: completed, caller-left, shutdown; None without one."""
    caller_ok: bool
    """The caller saw the agent join, stay without a gap and say bye at the end."""

    @property
    def completed(self) -> bool:
        return self.started and self.ended_how == "completed" and self.caller_ok

    @property
    def why_lost(self) -> str:
        if not self.started:
            return "no worker took it"
        if self.ended_how is None:
            return "its worker never ended it (killed?)"
        if self.ended_how != "completed":
            return f"ended {self.ended_how}"
        return "its caller never heard the agent's bye, or saw it leave and come back"


def caller_saw_it_through(*, agent_joined: bool, said_bye: bool, interruptions: int) -> bool:
    """The caller saw the agent join, stay without a gap and say bye at the end.

    Not the tests' `CallerOutcome.cut`, which also compares the hold the caller measured with
    the plan's: callers stamp events on their shared event loop, which a caller connecting can
    stall for seconds (a 5 s call its agent held 5.5 s measured 3.0 s). The agent's ledger has
    the exact hold, and a call is completed only when the ledger says so too."""
    return agent_joined and said_bye and not interruptions


def call_verdicts(
    rooms: Sequence[str], records: Sequence[Mapping[str, Any]], callers_ok: Mapping[str, bool]
) -> tuple[CallVerdict, ...]:
    """The verdict of every room the demo called, from the ledger and its callers."""
    started: set[str] = set()
    ended: dict[str, str] = {}
    for record in records:
        room = str(record.get("room", ""))
        if record.get("event") == "start":
            started.add(room)
        elif record.get("event") == "end":
            ended.setdefault(room, str(record.get("how", "")))
    return tuple(
        CallVerdict(
            room=room,
            started=room in started,
            ended_how=ended.get(room),
            caller_ok=callers_ok.get(room, False),
        )
        for room in rooms
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """The demo's result in numbers, and what makes it a failure."""

    planned: int
    started: int
    completed: int
    lost: tuple[CallVerdict, ...]
    peak_calls: int
    replicas_min: int
    replicas_max: int
    ready_max: int
    resting: int
    """Workers the fleet keeps without calls."""
    scale_ups: int
    scale_downs: int
    reactions: tuple[Reaction, ...]
    last_call_end_s: float | None
    """Offset of the last call's end line in the ledger."""
    settled_s: float | None
    """Offset of the first sample, after the last call, at the resting size with every worker
    Ready and none draining."""
    duration_s: float
    problems: tuple[str, ...]
    """Why the demo failed (empty: it did not)."""


def summarize(
    *,
    planned: int,
    verdicts: Sequence[CallVerdict],
    samples: Sequence[Sample],
    events: Sequence[ScaleEvent],
    records: Sequence[Mapping[str, Any]],
    t0: float,
    policy: Policy,
    resting: int,
    errors: Sequence[str] = (),
) -> Summary:
    """The Summary of a run that started its load at `t0` with `resting` workers."""
    ends = [float(r.get("t", 0.0)) for r in records if r.get("event") == "end"]
    last_end = max(ends, default=None)
    settled = next(
        (
            s.t - t0
            for s in samples
            if last_end is not None
            and s.t >= last_end
            and s.desired == resting
            and s.ready == resting
            and s.draining == 0
        ),
        None,
    )
    lost = tuple(v for v in verdicts if not v.completed)
    ups = sum(1 for e in events if e.up)
    downs = sum(1 for e in events if not e.up)
    problems = list(errors)
    if lost:
        problems.append(
            f"{len(lost)} of {planned} calls lost: "
            + "; ".join(f"{v.room} ({v.why_lost})" for v in lost[:5])
        )
    if len(verdicts) < planned:
        problems.append(f"only {len(verdicts)} of the {planned} planned calls were placed")
    if not ups:
        problems.append("nothing scaled up: no ScaledUp Event while the calls came")
    if not downs:
        problems.append("nothing scaled down: no ScaledDown Event after the calls ended")
    desired = [s.desired for s in samples] or [0]
    return Summary(
        planned=planned,
        started=sum(1 for v in verdicts if v.started),
        completed=sum(1 for v in verdicts if v.completed),
        lost=lost,
        peak_calls=max((s.calls for s in samples), default=0),
        replicas_min=min(desired),
        replicas_max=max(desired),
        ready_max=max((s.ready for s in samples), default=0),
        resting=resting,
        scale_ups=ups,
        scale_downs=downs,
        reactions=reactions(samples, events, records, policy),
        last_call_end_s=None if last_end is None else last_end - t0,
        settled_s=settled,
        duration_s=(samples[-1].t - t0) if samples else 0.0,
        problems=tuple(problems),
    )


def _times(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


def paragraph(summary: Summary) -> str:
    """The summary as one paragraph for a person."""
    lost = len(summary.lost)
    text = [
        f"{summary.planned} calls planned (rising, a burst, falling): {summary.started} started, "
        f"{summary.completed} completed, {lost} lost; at most {summary.peak_calls} at once.",
        f"The fleet ran {summary.replicas_min} to {summary.replicas_max} workers "
        f"({_times(summary.scale_ups, 'scale-up')}, {_times(summary.scale_downs, 'scale-down')}; "
        "at most "
        f"{summary.ready_max} ready).",
    ]
    timed = [r.ready_s for r in summary.reactions if r.ready_s is not None]
    if timed:
        first = summary.reactions[0]
        text.append(
            f"Reaction, from the call that left the fleet short (load above target or too few "
            f"warm workers) to the new workers Ready: "
            f"{_seconds(first.ready_s)} for the first scale-up ({first.event.label}), "
            f"median {statistics.median(timed):.0f} s, slowest {max(timed):.0f} s."
        )
    if summary.last_call_end_s is not None:
        rest = f"back at rest ({summary.resting} workers, all ready)"
        back = (
            f"was {rest} at +{summary.settled_s:.0f} s"
            if summary.settled_s is not None
            else f"was not {rest} when the demo stopped watching"
        )
        text.append(f"The last call ended at +{summary.last_call_end_s:.0f} s; the fleet {back}.")
    return " ".join(text)
