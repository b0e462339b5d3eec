"""CPU used by the worker and its job processes, as a share of the CPUs the worker may use.

Owns the measurement behind the default load (the seeds: "the worker's average CPU utilization");
load.LoadWindow averages it over 5 s. Measuring the worker's own process tree, not the whole
machine, keeps pods that share a node (and the test rig's shared host) from reading each other's
work. Also owns the CPU count the share is taken of: `AGENT_CPU_REQUEST_MILLICORES` (the pod's
CPU request, set by the operator through the downward API), else livekit-agents' `NUM_CPUS`, else
the cgroup quota, the affinity mask, the machine's count. A bad override is ignored with one
warning, never fatal. Parsing is pure (`parse_cpu_override`, `parse_cpu_max`,
`parse_cfs_quota`); reading files and sampling processes blocks: call them in a thread.
`LoadMeter` calls the user's load_fnc instead when there is one.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from worker_runtime import load
from worker_runtime.options import LoadFnc

logger = logging.getLogger(__name__)

CPU_REQUEST_ENV = "AGENT_CPU_REQUEST_MILLICORES"
"""The container's CPU request in millicores (downward API `requests.cpu`, divisor `1m`)."""
NUM_CPUS_ENV = "NUM_CPUS"
"""livekit-agents' override (utils/hw/cpu.py): a CPU count, fractions allowed."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
_MIN_QUOTA_CPUS = 0.01
_MILLICORES = re.compile(r"[0-9]+")
_EXPECTED = {
    CPU_REQUEST_ENV: "a whole number of millicores, like 500",
    NUM_CPUS_ENV: "a number of CPUs above 0, like 1.5",
}
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuOverride:
    """What the environment says about the CPU count."""

    cpus: float | None
    """The CPU count the environment sets; None when it sets none (or only bad values)."""
    source: str | None
    """The variable `cpus` came from; None with `cpus`."""
    rejected: tuple[tuple[str, str], ...] = ()
    """(variable, value) pairs that were set but ignored, to be warned about."""


def parse_cpu_override(env: Mapping[str, str]) -> CpuOverride:
    """The CPU count `AGENT_CPU_REQUEST_MILLICORES`, else `NUM_CPUS`, sets (empty means unset).

    The request must be a whole number of millicores; "0", which the downward API gives for a
    container without a request, means no request. `NUM_CPUS` is a float, as in livekit-agents;
    a value that is not a finite number above 0 is rejected instead of used.
    """
    rejected: list[tuple[str, str]] = []
    request = env.get(CPU_REQUEST_ENV, "").strip()
    if _MILLICORES.fullmatch(request) and int(request) > 0:
        return CpuOverride(cpus=int(request) / 1000, source=CPU_REQUEST_ENV)
    if request and not _MILLICORES.fullmatch(request):
        rejected.append((CPU_REQUEST_ENV, env[CPU_REQUEST_ENV]))
    num_cpus = env.get(NUM_CPUS_ENV, "")
    if num_cpus.strip():
        try:
            cpus = float(num_cpus)
        except ValueError:
            cpus = math.nan
        if math.isfinite(cpus) and cpus > 0:
            return CpuOverride(cpus=cpus, source=NUM_CPUS_ENV, rejected=tuple(rejected))
        rejected.append((NUM_CPUS_ENV, num_cpus))
    return CpuOverride(cpus=None, source=None, rejected=tuple(rejected))


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 `cpu.max` ("<quota> <period>"); None for "max" or garbage."""
    fields = text.split()
    if len(fields) < 2 or fields[0] == "max":
        return None
    return _quota_cpus(fields[0], fields[1])


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`; None for no quota."""
    return _quota_cpus(quota_text.strip(), period_text.strip())


def _quota_cpus(quota: str, period: str) -> float | None:
    try:
        cpus = float(quota) / float(period)
    except (ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(cpus) or cpus <= 0:
        return None
    return max(cpus, _MIN_QUOTA_CPUS)


def available_cpus(env: Mapping[str, str] = os.environ, cgroup_root: Path = CGROUP_ROOT) -> float:
    """CPUs this process may use (blocking: reads files).

    The override in `env` (see `parse_cpu_override`; a rejected value is warned about once per
    process), else the cgroup v2 or v1 quota under `cgroup_root`, else the affinity mask, else
    the machine's count.
    """
    override = parse_cpu_override(env)
    for variable, value in override.rejected:
        _warn_once(variable, value)
    if override.cpus is not None:
        return override.cpus
    with contextlib.suppress(OSError):
        cpus = parse_cpu_max((cgroup_root / "cpu.max").read_text())
        if cpus is not None:
            return cpus
    with contextlib.suppress(OSError):
        cpus = parse_cfs_quota(
            (cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text(),
            (cgroup_root / "cpu" / "cpu.cfs_period_us").read_text(),
        )
        if cpus is not None:
            return cpus
    with contextlib.suppress(AttributeError):
        return float(len(os.sched_getaffinity(0)))
    return float(os.cpu_count() or 1)


def _warn_once(variable: str, value: str) -> None:
    if (variable, value) in _warned:
        return
    _warned.add((variable, value))
    logger.warning(
        "ignoring a malformed CPU count override",
        extra={"variable": variable, "value": value, "expected": _EXPECTED[variable]},
    )


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
