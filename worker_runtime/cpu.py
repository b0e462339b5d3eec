"""CPU used by the worker and its job processes, as a share of the CPUs the worker may use.

Owns the measurement behind the default load (the seeds: "the worker's average CPU utilization");
load.LoadWindow averages it over 5 s. Measuring the worker's own process tree, not the whole
machine, keeps pods that share a node (and the test rig's shared host) from reading each other's
work. The CPU count honours the cgroup quota when there is one. Blocking: call it in a thread.
`LoadMeter` calls the user's load_fnc instead when there is one.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
from pathlib import Path

import psutil

from worker_runtime import load
from worker_runtime.options import LoadFnc


def available_cpus() -> float:
    """CPUs this process may use: the cgroup v2 or v1 quota, else its affinity, else the count."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(float(quota) / float(period), 0.01)
    with contextlib.suppress(OSError, ValueError):
        quota_us = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota_us > 0:
            return max(quota_us / period_us, 0.01)
    with contextlib.suppress(AttributeError):
        return float(len(os.sched_getaffinity(0)))
    return float(os.cpu_count() or 1)


class ProcessTreeCpu:
    """Samples the CPU seconds of this process and its descendants between calls."""

    def __init__(self) -> None:
        self._cpus = available_cpus()
        self._last_times: dict[int, float] = {}
        self._last_wall: float | None = None

    def sample(self, now_s: float) -> float | None:
        """Share of the CPUs used since the previous call (0..1); None on the first call."""
        times = _tree_cpu_seconds()
        previous, self._last_times = self._last_times, times
        last_wall, self._last_wall = self._last_wall, now_s
        if last_wall is None or now_s <= last_wall:
            return None
        used = sum(max(0.0, t - previous.get(pid, 0.0)) for pid, t in times.items())
        return min(used / ((now_s - last_wall) * self._cpus), 1.0)


def _tree_cpu_seconds() -> dict[int, float]:
    root = psutil.Process()
    found: dict[int, float] = {}
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = proc.cpu_times()
            found[proc.pid] = t.user + t.system
    return found


class LoadMeter:
    """The worker's load: `load_fnc` when given (with the worker or no argument), else CPU."""

    def __init__(self, load_fnc: LoadFnc | None) -> None:
        self._fnc = load_fnc
        self._takes_worker = load_fnc is not None and bool(inspect.signature(load_fnc).parameters)
        self._window = load.LoadWindow()
        self._cpu = ProcessTreeCpu()

    def measure(self, worker: object) -> float:
        """The current load (blocking; run it in a thread). load_fnc's exceptions propagate."""
        if self._fnc is None:
            now = time.monotonic()
            share = self._cpu.sample(now)
            if share is not None:
                self._window.add(now, share)
            return self._window.average(now)
        return float(self._fnc(worker) if self._takes_worker else self._fnc())
