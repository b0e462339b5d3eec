"""The processes of the observing benchmark, and the probes that sample them.

This module owns the child processes, each in its own process group with its output in a log
file: the fake worker server (`bench.fake_workers`, started and waited for until every address
listens) and the operators (`agent-operator`: the one that makes the pods, then those under
measurement on each side, one or a shard each, optionally under cProfile). It also owns one
sample of everything the benchmark watches: each operator process's CPU time, RSS and open
files (psutil) and its /metrics (read as sums, and as the shard and AgentWorkers it names), the
fake workers' /stats, the API proxy's counts. It decides nothing about the figures
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
from bench.observing_layout import Seen
from bench.workers import free_port

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 15
SHARD_METRIC = "agentworker_operator_shard"
"""1 with the label `shard` while the process holds that shard's Lease (--shards above 1)."""
LEADER_METRIC = "agentworker_operator_leader"


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
        """Start the process, its log new."""
        await self._spawn(stdout_pipe=stdout_pipe, mode="wb")

    async def restart(self) -> None:
        """Start an exited process again, as its pod would be; its log goes on."""
        await self.stop()
        await self._spawn(stdout_pipe=False, mode="ab")

    async def _spawn(self, *, stdout_pipe: bool, mode: str) -> None:
        self.log = self.log_path.open(mode)
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

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    def last_lines(self, count: int = LOG_TAIL_LINES) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()[-count:]

    def check(self) -> None:
        """ChildFailed when the process has exited."""
        if self.exited:
            assert self.proc is not None
            raise ChildFailed(
                f"{self.name} exited with {self.proc.returncode}; its log ends:\n"
                + "\n".join(self.last_lines())
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
    identity: str = "bench",
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
        f"--identity={identity}",
        "--health-port=0",
        "--metrics-host=127.0.0.1",
        f"--metrics-port={metrics_port}",
        "--log-format=json",
        "--log-level=WARNING",
        f"--sync-period={sync_period_s:g}",
        *extra_args,
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessMetrics:
    """One operator process's /metrics, read once."""

    sums: dict[str, float]
    """Every sample's value summed by sample name (over the labels)."""
    seen: Seen
    """Its shard, and the AgentWorkers its per-AgentWorker metrics name."""


def parse_metrics(text: str, *, namespace: str, shards: int) -> ProcessMetrics:
    """An operator's /metrics text: the sums, and what it says the process handles (the
    AgentWorkers of `namespace` its samples name; its shard, from agentworker_operator_shard,
    or 0 once it leads when there is one shard)."""
    sums: dict[str, float] = {}
    handled: set[str] = set()
    observed: set[str] = set()
    held: list[int] = []
    leader = False
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            sums[s.name] = sums.get(s.name, 0.0) + s.value
            name = s.labels.get("name")
            if s.labels.get("namespace") == namespace and name:
                handled.add(name)
                if s.name == report.OBSERVE_COUNT and s.value > 0:
                    observed.add(name)
            if s.name == SHARD_METRIC and s.value == 1 and s.labels.get("shard", "").isdigit():
                held.append(int(s.labels["shard"]))
            if s.name == LEADER_METRIC and s.value == 1:
                leader = True
    shard = (0 if leader else None) if shards == 1 else (held[0] if len(held) == 1 else None)
    return ProcessMetrics(
        sums=sums,
        seen=Seen(shard=shard, handled=frozenset(handled), observed=frozenset(observed)),
    )


class Probes:
    """Reads the operators' /metrics and the fake workers' /stats, all on 127.0.0.1."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        metrics_ports: Sequence[int],
        stats_port: int,
        namespace: str,
        shards: int,
    ) -> None:
        self._http = http
        self._metrics = [f"http://127.0.0.1:{port}/metrics" for port in metrics_ports]
        self._stats = f"http://127.0.0.1:{stats_port}/stats"
        self._namespace = namespace
        self._shards = shards

    async def _read(self, url: str) -> ProcessMetrics:
        async with self._http.get(url) as response:
            text = await response.text()
        return parse_metrics(text, namespace=self._namespace, shards=self._shards)

    async def metrics(self) -> list[ProcessMetrics]:
        """Each operator process's /metrics, in process order."""
        return list(await asyncio.gather(*(self._read(url) for url in self._metrics)))

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


def _look(proc: psutil.Process, metrics: ProcessMetrics) -> report.OperatorSample:
    with proc.oneshot():
        cpu, rss, fds = _cpu_s(proc), proc.memory_info().rss, proc.num_fds()
    return report.OperatorSample(cpu_s=cpu, rss_mb=rss / 2**20, fds=fds, metrics=metrics.sums)


async def sample(
    probes: Probes,
    operators: Sequence[psutil.Process],
    fakes: psutil.Process,
    proxy: ApiProxy,
) -> tuple[report.Sample, list[Seen]]:
    """One look at everything, its time taken after the HTTP reads; and what each operator
    process's metrics say it handles."""
    metrics, stats = await asyncio.gather(probes.metrics(), probes.stats())
    looks = tuple(_look(proc, m) for proc, m in zip(operators, metrics, strict=True))
    with fakes.oneshot():
        fake_cpu, fake_fds = _cpu_s(fakes), fakes.num_fds()
    taken = report.Sample(
        t_s=time.monotonic(),
        operators=looks,
        fake_workers_cpu_s=fake_cpu,
        fake_workers_fds=fake_fds,
        bench_cpu_s=_cpu_s(psutil.Process()),
        worker_requests=_int(stats.get("requests")),
        worker_plain=_int(stats.get("plain")),
        polls=_ints(stats.get("polls")),
        polls_held=_int(stats.get("held")),
        worker_changes=_int(stats.get("changes")),
        worker_connections=_int(stats.get("connections")),
        api=proxy.counts(),
        watch_events=proxy.watch_events(),
    )
    return taken, [m.seen for m in metrics]
