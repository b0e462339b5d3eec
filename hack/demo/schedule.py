"""The demo's load pattern: when each call starts and how long it lasts.

Three phases the autoscaler must follow: rising (one call every `rise_every_s`), a burst
(several calls at once, once the fleet has grown for the rising calls), and falling (the burst's
calls end together, then the rising ones one by one in the order they came). Times are seconds
from the start of the load. Pure: no I/O, no clock; a pattern that cannot have that shape is a
ValueError naming the field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(enum.StrEnum):
    """Where the load is, for the view and the plot."""

    RISING = "rising"
    BURST = "burst"
    FALLING = "falling"
    SCALING_DOWN = "scaling down"
    """Every call has ended: the fleet retires its idle workers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadPattern:
    """The shape of the load. The defaults suit the example fleet (each call a quarter of a
    worker, full at 3 calls, 2 warm workers, at most 4): a peak of 10 calls fits in 4 workers."""

    rising_calls: int = 6
    """Calls of the rising phase, the first at 0 s."""
    rise_every_s: float = 5.0
    """Seconds between two rising calls."""
    burst_calls: int = 4
    """Calls that arrive at once in the burst."""
    burst_at_s: float = 45.0
    """When the burst arrives: late enough for the workers the rising calls asked for to have
    registered with LiveKit (a new worker takes 10 to 20 s on the rig)."""
    burst_hold_s: float = 20.0
    """How long the burst's calls last."""
    fall_from_s: float = 70.0
    """When the first rising call ends; the next ones end `fall_every_s` apart."""
    fall_every_s: float = 5.0
    """Seconds between the ends of two rising calls."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedCall:
    """One call of the schedule."""

    at_s: float
    """When it starts (its caller joins the room and the agent is dispatched)."""
    hold_s: float
    """How long the agent holds it (the dispatch's metadata says so)."""
    phase: Phase
    """RISING or BURST: the phase it belongs to."""

    @property
    def end_s(self) -> float:
        return self.at_s + self.hold_s


@dataclass(frozen=True, slots=True, kw_only=True)
class Wave:
    """Calls started together: the same start and hold time (one `Calls.start`)."""

    at_s: float
    hold_s: float
    count: int
    phase: Phase


def build_schedule(pattern: LoadPattern) -> tuple[PlannedCall, ...]:
    """Every call of the pattern, in the order they start."""
    _check(pattern)
    rising = tuple(
        PlannedCall(
            at_s=index * pattern.rise_every_s,
            hold_s=pattern.fall_from_s + index * (pattern.fall_every_s - pattern.rise_every_s),
            phase=Phase.RISING,
        )
        for index in range(pattern.rising_calls)
    )
    burst = tuple(
        PlannedCall(at_s=pattern.burst_at_s, hold_s=pattern.burst_hold_s, phase=Phase.BURST)
        for _ in range(pattern.burst_calls)
    )
    return tuple(sorted((*rising, *burst), key=lambda call: call.at_s))


def _check(pattern: LoadPattern) -> None:
    """ValueError naming the field when the pattern cannot be rising, then burst, then falling."""
    if pattern.rising_calls < 1 or pattern.burst_calls < 1:
        raise ValueError(
            f"rising_calls ({pattern.rising_calls}) and burst_calls ({pattern.burst_calls}) "
            "must each be at least 1"
        )
    if pattern.rise_every_s <= 0 or pattern.fall_every_s <= 0 or pattern.burst_hold_s <= 0:
        raise ValueError("rise_every_s, fall_every_s and burst_hold_s must be positive")
    last_rise = (pattern.rising_calls - 1) * pattern.rise_every_s
    if pattern.burst_at_s <= last_rise:
        raise ValueError(
            f"burst_at_s: {pattern.burst_at_s:g} is not after the last rising call "
            f"({last_rise:g} s)"
        )
    burst_end = pattern.burst_at_s + pattern.burst_hold_s
    if pattern.fall_from_s < burst_end:
        raise ValueError(
            f"fall_from_s: {pattern.fall_from_s:g} is before the burst ends ({burst_end:g} s)"
        )


def waves(schedule: tuple[PlannedCall, ...]) -> tuple[Wave, ...]:
    """The schedule as groups of calls that start together with the same hold time."""
    grouped: list[Wave] = []
    for call in schedule:
        last = grouped[-1] if grouped else None
        if last is not None and (last.at_s, last.hold_s) == (call.at_s, call.hold_s):
            grouped[-1] = Wave(
                at_s=last.at_s, hold_s=last.hold_s, count=last.count + 1, phase=last.phase
            )
        else:
            grouped.append(Wave(at_s=call.at_s, hold_s=call.hold_s, count=1, phase=call.phase))
    return tuple(grouped)


def active_at(schedule: tuple[PlannedCall, ...], t: float) -> int:
    """Calls the plan has on the line at `t` (started, not yet ended)."""
    return sum(1 for call in schedule if call.at_s <= t < call.end_s)


def peak(schedule: tuple[PlannedCall, ...]) -> int:
    """The most calls the plan has on the line at once."""
    return max((active_at(schedule, call.at_s) for call in schedule), default=0)


def last_end_s(schedule: tuple[PlannedCall, ...]) -> float:
    """When the plan's last call ends."""
    return max((call.end_s for call in schedule), default=0.0)


def phases(schedule: tuple[PlannedCall, ...]) -> tuple[tuple[Phase, float, float], ...]:
    """(phase, from, to) of the load: rising until the burst, the burst until its calls end,
    falling until the last call ends."""
    burst = [call for call in schedule if call.phase is Phase.BURST]
    if not burst:
        return ((Phase.RISING, 0.0, last_end_s(schedule)),)
    burst_from = min(call.at_s for call in burst)
    burst_to = max(call.end_s for call in burst)
    return (
        (Phase.RISING, 0.0, burst_from),
        (Phase.BURST, burst_from, burst_to),
        (Phase.FALLING, burst_to, last_end_s(schedule)),
    )


def phase_at(schedule: tuple[PlannedCall, ...], t: float) -> Phase:
    """The phase of the load at `t` (SCALING_DOWN once every call has ended)."""
    for phase, start, end in phases(schedule):
        if t < end and t >= start:
            return phase
    return Phase.RISING if t < 0 else Phase.SCALING_DOWN


def plan_steps(schedule: tuple[PlannedCall, ...]) -> tuple[tuple[float, int], ...]:
    """The calls the plan has on the line as a step series: (offset, count from then on)."""
    moments = sorted({0.0, *(c.at_s for c in schedule), *(c.end_s for c in schedule)})
    return tuple((t, active_at(schedule, t)) for t in moments)
