"""Load: a sliding window of samples and the FULL-or-AVAILABLE decision.

Owns the default load (CPU utilisation averaged over a 5 s window) and the threshold rule. Pure:
the caller measures (psutil lives in the worker) and passes samples with their timestamps; nothing
here reads a clock or the system.
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


def is_full(load: float, threshold: float) -> bool:
    """Full when the load is above the threshold (the seeds: the threshold still accepts)."""
    return load > threshold


def clamp_load(value: float) -> float:
    """A reported load: a number in 0..1 (a NaN or a bad load_fnc value reads as fully loaded)."""
    if math.isnan(value):
        return 1.0
    return min(max(value, 0.0), 1.0)
