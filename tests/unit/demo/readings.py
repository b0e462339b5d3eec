"""Readings of a made-up fleet for the demo's unit tests: samples, Events, ledger lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hack.demo.timeline import Sample, ScaleEvent

T0 = 1_800_000_000.0


def sample(offset: float, **fields: Any) -> Sample:
    values: dict[str, Any] = {
        "desired": 2, "ready": 2, "available": 2, "full": 0, "draining": 0, "starting": 0,
        "unknown": 0, "load": 0.0, "calls": 0, **fields,
    }  # fmt: skip
    return Sample(t=T0 + offset, **values)


def event(offset: float, reason: str, change: tuple[int, int]) -> ScaleEvent:
    return ScaleEvent(
        t=T0 + offset,
        reason=reason,
        message=f"load 0.62 > target 0.50: {change[0]} -> {change[1]} workers",
        from_replicas=change[0],
        to_replicas=change[1],
    )


def ledger(*lines: tuple[str, str, float, str]) -> list[dict[str, Any]]:
    """(event, room, offset, how) lines as the call agent writes them."""
    return [{"event": e, "room": room, "t": T0 + at, "how": how} for e, room, at, how in lines]


def calls(*held: tuple[str, float, float, str]) -> list[dict[str, Any]]:
    """(room, start offset, end offset, worker's pod IP) calls as ledger lines, in time order."""
    lines = [{"event": "start", "room": r, "t": T0 + a, "pod_ip": p} for r, a, _, p in held]
    lines += [{"event": "end", "room": r, "t": T0 + e, "how": "completed"} for r, _, e, _ in held]
    return sorted(lines, key=lambda line: float(line["t"]))


@dataclass(frozen=True)
class TwoCallRun:
    """Two calls on a fleet of 2 that scaled 2 -> 3 at +5 s and back to 2 at +34 s."""

    records: list[dict[str, Any]]
    samples: list[Sample]
    events: list[ScaleEvent]


def two_call_run() -> TwoCallRun:
    records = calls(("a", 0, 30, "w1"), ("b", 1, 31, "w1"))
    samples = [
        sample(0, calls=1),
        sample(2, calls=2, load=0.6, available=1, full=1),
        sample(5, calls=2, load=0.6, desired=3),
        sample(12, calls=2, load=0.35, desired=3, ready=3),
        sample(35, desired=2, ready=3, draining=1),
        sample(40, desired=2, ready=2),
    ]
    events = [event(5, "ScaledUp", (2, 3)), event(34, "ScaledDown", (3, 2))]
    return TwoCallRun(records, samples, events)
