"""One side of the observing benchmark: an operator with or without its long polls, measured.

This module owns what a side does with what `bench.observing` made for the whole run (the
objects, the fake worker server, the counting proxy): it blanks the worker counts of every
AgentWorker's status (a previous side's operator wrote them; now only this side's can make them
match again), starts `agent-operator` with the side's arguments, waits (bounded) until every
status counts what the fake workers answer and every worker was read since the side began,
lets it settle, samples once a second for the window, and stops the operator. It makes no
object and works out no figure (`bench.observing_report` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from agentworker_operator import kube
from bench import fake_fleet, phantom
from bench import observing_processes as processes
from bench import observing_report as report
from bench.api_proxy import ApiProxy
from bench.fake_fleet import FleetShape
from bench.provenance import utc_now
from bench.workers import free_port

STATUS_LAG_S = 15.0
"""How far back the answers an AgentWorker's status counts may date (a round, and its write)."""
VERIFY_POLL_S = 2.0
COUNT_FIELDS = (
    "available",
    "full",
    "draining",
    "unknown",
    "starting",
    "activeJobs",
    "unknownWorkers",
)
"""The status fields `fake_fleet.counts_of` reads: blanked before each side."""


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservingConfig:
    """How big the fleet is, how long to look, and which sides, in which order."""

    agentworkers: int = 10
    workers_per_agentworker: int = 100
    sync_period_s: float = 5.0
    """The operator's --sync-period."""
    settle_s: float = 30.0
    """Seconds between the statuses first matching and the window, on each side."""
    window_s: float = 90.0
    """Seconds measured on each side."""
    sample_s: float = 1.0
    change_period_s: float = 60.0
    """Seconds between two draws of a changing worker's calls (5% of the workers)."""
    verify_timeout_s: float = 180.0
    """Bound of the wait for the statuses to match the fake workers' answers."""
    sides: tuple[str, ...] = ("watch", "no-watch")
    """The keys of `SIDES` to run, one after the other in this order."""

    @property
    def shape(self) -> FleetShape:
        return FleetShape(
            agentworkers=self.agentworkers,
            workers_per_agentworker=self.workers_per_agentworker,
            change_period_s=self.change_period_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Side:
    """An operator configuration measured."""

    key: str
    title: str
    """Its column's title."""
    operator_args: tuple[str, ...]
    """Appended to the operator's command line."""


SIDES = {
    "watch": Side(key="watch", title="long polls (default)", operator_args=()),
    "no-watch": Side(
        key="no-watch", title="--no-worker-watch", operator_args=("--no-worker-watch",)
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Shared:
    """What every side uses, made once for the run."""

    cfg: ObservingConfig
    client: kube.Kube
    http: aiohttp.ClientSession
    fakes: processes.Child
    stats_port: int
    proxy: ApiProxy
    workdir: Path
    profile: Path | None
    """cProfile the operator, its stats to this path with the side's key before the suffix."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SideOutcome:
    """What one side saw."""

    side: Side
    samples: list[report.Sample]
    window: tuple[datetime.datetime, datetime.datetime]
    problems: list[str]


def note(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def status_mismatches(client: kube.Kube, shape: FleetShape) -> list[str]:
    """AgentWorkers whose status counts no answers the fake workers gave in the last seconds."""
    now = time.time()
    moments = [now - lag for lag in range(round(STATUS_LAG_S) + 1)]
    wrong = []
    for aw in range(shape.agentworkers):
        name = fake_fleet.agentworker_name(aw)
        body = await client.get(kube.agentworker_path(phantom.NAMESPACE, name)) or {}
        seen = fake_fleet.counts_of(body.get("status") or {})
        expected = [fake_fleet.expected_counts(shape, aw, t) for t in moments]
        if seen not in expected:
            wrong.append(f"{name}: status {seen}, fake workers {expected[0]}")
    return wrong


async def blank_counts(client: kube.Kube, shape: FleetShape) -> None:
    """Remove the worker counts from every AgentWorker's status (a merge patch of nulls)."""
    blank = dict.fromkeys(COUNT_FIELDS)
    for aw in range(shape.agentworkers):
        path = kube.agentworker_path(phantom.NAMESPACE, fake_fleet.agentworker_name(aw))
        await client.patch_status(path, blank)


async def _per_worker(probes: processes.Probes) -> list[int]:
    per_worker = (await probes.stats()).get("per_worker")
    if not isinstance(per_worker, list):
        raise BenchError(f"the fake workers' /stats has no per_worker list: {per_worker!r}")
    return [n if isinstance(n, int) else 0 for n in per_worker]


async def verify(
    cfg: ObservingConfig,
    client: kube.Kube,
    probes: processes.Probes,
    operator: processes.Child,
    read_before: list[int],
) -> None:
    """Wait (bounded) until every status matches the answers and every worker was read since
    the side began (`read_before`: the fake workers' per-worker counts then)."""
    deadline = time.monotonic() + cfg.verify_timeout_s
    wrong: list[str] = ["no status read yet"]
    unread = cfg.shape.workers
    while time.monotonic() < deadline:
        operator.check()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            wrong = await status_mismatches(client, cfg.shape)
            read = await _per_worker(probes)
            unread = sum(1 for n, m in zip(read, read_before, strict=True) if n == m)
            if not wrong and unread == 0:
                return
        await asyncio.sleep(VERIFY_POLL_S)
    raise BenchError(
        f"after {cfg.verify_timeout_s:.0f}s: {unread} workers never read; statuses that do not "
        "match the fake workers:\n" + "\n".join(wrong)
    )


async def measure(
    cfg: ObservingConfig,
    probes: processes.Probes,
    operator: processes.Child,
    fakes: processes.Child,
    proxy: ApiProxy,
) -> list[report.Sample]:
    """One sample every `sample_s` for `window_s`, on a fixed schedule."""
    op, fk = psutil.Process(operator.pid), psutil.Process(fakes.pid)
    samples = [await processes.sample(probes, op, fk, proxy)]
    start = samples[0].t_s
    for i in range(1, round(cfg.window_s / cfg.sample_s) + 1):
        await asyncio.sleep(max(0.0, start + i * cfg.sample_s - time.monotonic()))
        operator.check()
        fakes.check()
        samples.append(await processes.sample(probes, op, fk, proxy))
    return samples


def operator_log_problems(path: Path) -> list[str]:
    """The operator's WARNING and ERROR lines (it runs at --log-level=WARNING), first ten."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return [f"operator log: {line[:300]}" for line in lines[:10]] + (
        [f"operator log: ... {len(lines) - 10} more lines"] if len(lines) > 10 else []
    )


def _profile_path(profile: Path | None, side: Side) -> Path | None:
    return None if profile is None else profile.with_stem(f"{profile.stem}-{side.key}")


async def run_side(shared: Shared, side: Side) -> SideOutcome:
    """Blank the counts, start this side's operator, verify, settle, measure, stop it."""
    cfg = shared.cfg
    await blank_counts(shared.client, cfg.shape)
    metrics_port = free_port()
    operator = processes.Child(
        name=f"agent-operator ({side.key})",
        argv=processes.operator_argv(
            namespace=phantom.NAMESPACE,
            sync_period_s=cfg.sync_period_s,
            metrics_port=metrics_port,
            profile=_profile_path(shared.profile, side),
            extra_args=side.operator_args,
        ),
        log_path=shared.workdir / f"operator-{side.key}.log",
        env={**os.environ, "KUBECONFIG": str(shared.proxy.kubeconfig)},
    )
    probes = processes.Probes(shared.http, metrics_port=metrics_port, stats_port=shared.stats_port)
    try:
        read_before = await _per_worker(probes)
        await operator.start()
        note(f"{side.key}: operator started; waiting until the statuses count the answers")
        await verify(cfg, shared.client, probes, operator, read_before)
        timing = f"settling {cfg.settle_s:.0f}s, then measuring {cfg.window_s:.0f}s"
        note(f"{side.key}: statuses match; {timing}")
        await asyncio.sleep(cfg.settle_s)
        operator.check()
        window_start = utc_now()
        samples = await measure(cfg, probes, operator, shared.fakes, shared.proxy)
        window = (window_start, utc_now())
        problems = [
            f"after the window: {m}" for m in await status_mismatches(shared.client, cfg.shape)
        ]
    finally:
        await operator.stop()
    problems += operator_log_problems(operator.log_path)
    return SideOutcome(
        side=side, samples=samples, window=window, problems=[f"{side.key}: {p}" for p in problems]
    )
