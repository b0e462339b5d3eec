"""The processes of the observing benchmark, and the probes that sample them.

This module owns the child processes, each in its own process group with its output in a log
file: the fake worker server (`bench.fake_workers`, started and waited for until every address
listens) and the operators (`agent-operator`: the one that makes the pods, then the one under
measurement on each side, optionally under cProfile). It also owns one sample of everything
the benchmark watches: the operator's CPU time and RSS (psutil), its /metrics, the fake
workers' /stats, the API proxy's counts. It decides nothing about the figures
(`bench.observing_report` does) and stops every process it started, SIGTERM first, then
SIGKILL to the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench import observing_report as report
from bench.api_proxy import ApiProxy
from bench.fake_fleet import FleetShape
from bench.workers import free_port

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 15


class ChildFailed(RuntimeError):
    """A child process exited early or did not start; the message has its last log lines."""


@dataclass(slots=True)
class Child:
    """A subprocess in its own process group, its output in a log file; `stop()` always."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    proc: asyncio.subprocess.Process | None = None
    log: IO[bytes] | None = None

    async def start(self, *, stdout_pipe: bool = False) -> None:
        self.log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else self.log,
            stderr=self.log,
            env=self.env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check(self) -> None:
        """ChildFailed when the process has exited."""
        if self.proc is not None and self.proc.returncode is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            raise ChildFailed(
                f"{self.name} exited with {self.proc.returncode}; its log ends:\n" + "\n".join(tail)
            )

    async def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL to the group; idempotent, never raises."""
        proc = self.proc
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        if self.log is not None:
            self.log.close()
            self.log = None


async def start_fake_workers(shape: FleetShape, workdir: Path) -> tuple[Child, int]:
    """The fake worker server, once every address listens; (the child, its control port)."""
    port = free_port()
    child = Child(
        name="fake workers",
        argv=[
            sys.executable,
            "-m",
            "bench.fake_workers",
            f"--control-port={port}",
            f"--agentworkers={shape.agentworkers}",
            f"--workers-per-agentworker={shape.workers_per_agentworker}",
            f"--change-period={shape.change_period_s}",
            f"--seed={shape.seed}",
        ],
        log_path=workdir / "fake-workers.log",
    )
    await child.start(stdout_pipe=True)
    assert child.proc is not None
    assert child.proc.stdout is not None
    try:
        line = await asyncio.wait_for(child.proc.stdout.readline(), START_TIMEOUT_S)
    except TimeoutError:
        line = b""
    if line.strip() != b"ready":
        await child.stop()
        child.check()
        raise ChildFailed(f"the fake workers did not start: {line!r}, see {child.log_path}")
    return child, port


def operator_argv(
    *,
    namespace: str,
    sync_period_s: float,
    metrics_port: int,
    profile: Path | None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The operator's command, `extra_args` last; under cProfile (writing `profile` at exit)
    when one is given."""
    profiler = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else []
    return [
        *profiler,
        str(BIN / "agent-operator"),
        f"--namespace={namespace}",
        f"--lease-namespace={namespace}",
        "--identity=bench",
        "--health-port=0",
        "--metrics-host=127.0.0.1",
        f"--metrics-port={metrics_port}",
        "--log-format=json",
        "--log-level=WARNING",
        f"--sync-period={sync_period_s:g}",
        *extra_args,
    ]


class Probes:
    """Reads the operator's /metrics and the fake workers' /stats, both on 127.0.0.1."""

    def __init__(self, http: aiohttp.ClientSession, *, metrics_port: int, stats_port: int) -> None:
        self._http = http
        self._metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        self._stats = f"http://127.0.0.1:{stats_port}/stats"

    async def metrics(self) -> dict[str, float]:
        """Every sample of the operator's /metrics, summed by sample name (over the labels)."""
        async with self._http.get(self._metrics) as response:
            text = await response.text()
        sums: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                sums[s.name] = sums.get(s.name, 0.0) + s.value
        return sums

    async def stats(self) -> dict[str, object]:
        async with self._http.get(self._stats) as response:
            answer: dict[str, object] = await response.json()
            return answer


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ints(value: object) -> dict[str, int]:
    """A JSON object of counts (the fake workers' polls by how they ended)."""
    return {str(k): _int(v) for k, v in value.items()} if isinstance(value, dict) else {}


async def sample(
    probes: Probes, operator: psutil.Process, fakes: psutil.Process, proxy: ApiProxy
) -> report.Sample:
    """One look at everything, its time taken after the two HTTP reads."""
    metrics, stats = await asyncio.gather(probes.metrics(), probes.stats())
    with operator.oneshot():
        cpu, rss = _cpu_s(operator), operator.memory_info().rss
    return report.Sample(
        t_s=time.monotonic(),
        operator_cpu_s=cpu,
        operator_rss_mb=rss / 2**20,
        fake_workers_cpu_s=_cpu_s(fakes),
        bench_cpu_s=_cpu_s(psutil.Process()),
        worker_requests=_int(stats.get("requests")),
        worker_plain=_int(stats.get("plain")),
        polls=_ints(stats.get("polls")),
        polls_held=_int(stats.get("held")),
        worker_changes=_int(stats.get("changes")),
        worker_connections=_int(stats.get("connections")),
        metrics=metrics,
        api=proxy.counts(),
        watch_events=proxy.watch_events(),
    )
