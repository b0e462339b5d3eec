"""Load: a sliding window of samples and the FULL-or-AVAILABLE decision.

Owns the default load (CPU utilisation averaged over a 5 s window) and the threshold rule,
including the jobs a measurement cannot have seen yet (a burst of offers arrives faster than the
jobs they bring start and show up in the load). Pure: the caller measures (psutil lives in the
worker) and passes samples with their timestamps and plain counts; nothing here reads a clock or
the system.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

DEFAULT_WINDOW_S = 5.0
"""The seeds' window for the default CPU load."""


@dataclass(slots=True)
class LoadWindow:
    """Samples (time in s, value 0..1) younger than `window_s`; their mean is the load."""

    window_s: float = DEFAULT_WINDOW_S
    _samples: deque[tuple[float, float]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s: {self.window_s!r} is not a number of seconds > 0")

    def add(self, now_s: float, value: float) -> None:
        """Record one sample (clamped to 0..1, NaN ignored) and forget the expired ones."""
        if not math.isnan(value):
            self._samples.append((now_s, min(max(value, 0.0), 1.0)))
        self._expire(now_s)

    def _expire(self, now_s: float) -> None:
        while self._samples and self._samples[0][0] <= now_s - self.window_s:
            self._samples.popleft()

    def average(self, now_s: float) -> float:
        """Mean of the samples in the window ending at `now_s`; 0.0 when there are none."""
        self._expire(now_s)
        if not self._samples:
            return 0.0
        return sum(v for _, v in self._samples) / len(self._samples)

    def __len__(self) -> int:
        return len(self._samples)


@dataclass(frozen=True, slots=True, kw_only=True)
class Occupancy:
    """What the worker carries at one moment, as the FULL-or-AVAILABLE rule sees it."""

    load: float
    """The last measured load, 0..1."""
    measured_jobs: int
    """Jobs that were running when that load was measured: the load already counts them."""
    held_jobs: int
    """Jobs running now plus the offers it holds a slot for: an offer request_fnc is deciding,
    an accepted job waiting for its assignment or its process."""

    @property
    def unmeasured_jobs(self) -> int:
        """Held jobs the load cannot count yet (accepted, or started since it was measured)."""
        return max(0, self.held_jobs - self.measured_jobs)


def is_full(occupancy: Occupancy, *, threshold: float) -> bool:
    """Whether the worker must take no new job: what it measured says so.

    Full when the measured load is above `threshold` (the seeds: the threshold itself still
    accepts), or when the jobs the load does not count yet would put it there, each counted as
    what a measured job adds (the load over the jobs it was measured with, as livekit-agents
    estimates it). Before any running job was measured what a job adds is unknown, and this
    rule does not guess: `awaits_first_measurement` holds the offers back instead. An infinite
    threshold disables the rule.
    """
    if math.isinf(threshold):
        return False
    if occupancy.load > threshold:
        return True
    if occupancy.measured_jobs == 0:
        return False
    per_job = occupancy.load / occupancy.measured_jobs
    return occupancy.load + occupancy.unmeasured_jobs * per_job > threshold


def awaits_first_measurement(
    occupancy: Occupancy, *, threshold: float, prewarmed: int, waited: bool
) -> bool:
    """Whether an offer must not be taken yet because no job's cost was measured.

    Until a job was measured running, the worker takes one at a time: the next offer waits
    (`waited` False) for the reading that measures it, normally milliseconds away. An offer that
    waited in vain (the first job is slow to reach a process, or request_fnc slow to decide)
    falls back on livekit-agents' guess: as many jobs at once as processes are prewarmed (it
    counts each as load_threshold / num_idle_processes), at least one.
    """
    if math.isinf(threshold) or occupancy.measured_jobs > 0:
        return False
    at_once = max(prewarmed, 1) if waited else 1
    return occupancy.unmeasured_jobs >= at_once


def clamp_load(value: float) -> float:
    """A reported load: a number in 0..1 (a NaN or a bad load_fnc value reads as fully loaded)."""
    if math.isnan(value):
        return 1.0
    return min(max(value, 0.0), 1.0)
