"""What the demo saw, as values: samples of the fleet, its scale events, its calls over time.

Owns the meaning of the demo's readings: a `Sample` parsed from the AgentWorker's status and its
Deployment, a `ScaleEvent` parsed from the AgentWorker's Events, the calls on the line from the
agent's ledger, and the series the plot draws (`PlotData`). `verdict` judges them. Times are
Unix seconds in, offsets from the start of the load out. Pure: no I/O, no clock, no environment.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"
_CHANGE = re.compile(r"(\d+) -> (\d+) workers")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """The fleet at one moment."""

    t: float
    """Unix time of the reading."""
    desired: int
    """Replicas the operator asked the Deployment for (its spec.replicas)."""
    ready: int
    """Ready worker pods (the Deployment's status)."""
    available: int
    """Workers taking new calls (the AgentWorker's status, as of the operator's last sync)."""
    full: int
    draining: int
    starting: int
    unknown: int
    load: float | None
    """Average load of the serving workers (the AgentWorker's status); None without any."""
    calls: int
    """Calls on the line: started and not ended in the agent's ledger."""
    jobs: int = 0
    """Calls the operator saw on the workers at its last sync (the AgentWorker's activeJobs)."""


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return int(value) if isinstance(value, int | float) else 0


def sample_from(
    t: float,
    status: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    calls: int,
) -> Sample:
    """A Sample from the AgentWorker's status, its Deployment (None before it exists) and the
    calls on the line."""
    spec = (deployment or {}).get("spec") or {}
    state = (deployment or {}).get("status") or {}
    load = status.get("load")
    return Sample(
        t=t,
        desired=_count(spec, "replicas"),
        ready=_count(state, "readyReplicas"),
        available=_count(status, "available"),
        full=_count(status, "full"),
        draining=_count(status, "draining"),
        starting=_count(status, "starting"),
        unknown=_count(status, "unknown"),
        load=float(load) if isinstance(load, int | float) else None,
        calls=calls,
        jobs=_count(status, "activeJobs"),
    )


def on_line(records: Sequence[Mapping[str, Any]], t: float) -> list[Mapping[str, Any]]:
    """The ledger's start lines of the calls on the line at `t`."""
    starts: dict[str, Mapping[str, Any]] = {}
    ends: dict[str, float] = {}
    for record in records:
        room, when = str(record.get("room", "")), float(record.get("t", 0.0))
        if record.get("event") == "start" and when <= t:
            starts.setdefault(room, record)
        elif record.get("event") == "end":
            ends.setdefault(room, when)
    return [start for room, start in starts.items() if ends.get(room, t + 1) > t]


def calls_on_line(records: Sequence[Mapping[str, Any]], t: float) -> int:
    """Calls the ledger shows started at or before `t` and not ended by then."""
    return len(on_line(records, t))


def call_steps(
    records: Sequence[Mapping[str, Any]], t0: float
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Calls on the line as a step series: (offsets from t0, count from that offset on)."""
    changes = sorted(
        (float(r.get("t", 0.0)) - t0, 1 if r.get("event") == "start" else -1)
        for r in records
        if r.get("event") in ("start", "end")
    )
    times, counts, running = [0.0], [0], 0
    for offset, delta in changes:
        running += delta
        times.append(offset)
        counts.append(running)
    return tuple(times), tuple(counts)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleEvent:
    """A ScaledUp or ScaledDown Event of the AgentWorker."""

    t: float
    """Unix time (the API server keeps whole seconds)."""
    reason: str
    message: str
    from_replicas: int | None
    to_replicas: int | None

    @property
    def up(self) -> bool:
        return self.reason == SCALED_UP

    @property
    def label(self) -> str:
        """`2→3`, or the reason when the message names no change."""
        if self.from_replicas is None or self.to_replicas is None:
            return self.reason
        return f"{self.from_replicas}→{self.to_replicas}"


def _unix_time(stamp: object) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def scale_events(events: Iterable[Mapping[str, Any]], *, since: float) -> tuple[ScaleEvent, ...]:
    """The ScaledUp and ScaledDown Events (core/v1 objects) from `since` on, oldest first."""
    found = []
    for event in events:
        reason = event.get("reason")
        when = _unix_time(event.get("eventTime")) or _unix_time(
            event.get("lastTimestamp") or event.get("firstTimestamp")
        )
        if reason not in (SCALED_UP, SCALED_DOWN) or when is None or when < since - 1.0:
            continue
        message = str(event.get("message", ""))
        change = _CHANGE.search(message)
        found.append(
            ScaleEvent(
                t=when,
                reason=str(reason),
                message=message,
                from_replicas=int(change.group(1)) if change else None,
                to_replicas=int(change.group(2)) if change else None,
            )
        )
    return tuple(sorted(found, key=lambda e: e.t))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlotData:
    """The plot's series, as offsets in seconds from the start of the load."""

    t: tuple[float, ...]
    load: tuple[float | None, ...]
    desired: tuple[int, ...]
    ready: tuple[int, ...]
    by_state: dict[str, tuple[int, ...]]
    """Workers available, full, starting, draining and unknown at each sample."""
    call_t: tuple[float, ...]
    calls: tuple[int, ...]
    """Calls on the line, a step series from the ledger (exact)."""
    plan_t: tuple[float, ...]
    plan: tuple[int, ...]
    """Calls the schedule has on the line, a step series."""
    events: tuple[tuple[float, str, bool], ...]
    """(offset, label, is a scale-up) of every scale event."""


STATES = ("available", "full", "starting", "draining", "unknown")


def plot_data(
    samples: Sequence[Sample],
    events: Sequence[ScaleEvent],
    records: Sequence[Mapping[str, Any]],
    plan: Sequence[tuple[float, int]],
    *,
    t0: float,
) -> PlotData:
    """The plot's series from what the demo gathered; `plan` is (offset, calls) steps."""
    call_t, calls = call_steps(records, t0)
    return PlotData(
        t=tuple(s.t - t0 for s in samples),
        load=tuple(s.load for s in samples),
        desired=tuple(s.desired for s in samples),
        ready=tuple(s.ready for s in samples),
        by_state={state: tuple(int(getattr(s, state)) for s in samples) for state in STATES},
        call_t=call_t,
        calls=calls,
        plan_t=tuple(offset for offset, _ in plan),
        plan=tuple(count for _, count in plan),
        events=tuple((e.t - t0, e.label, e.up) for e in events),
    )
