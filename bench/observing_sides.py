"""One side of the observing benchmark: an operator with or without its long polls, measured.

This module owns the operators of a run. Before the sides, `make_pods` runs one that is not
measured until the Deployments it makes have all their pods running on the phantom node (the
phantom node's kubelet, `bench.phantom_kubelet`, starts them), and stops it. Then, for each
side, with what `bench.observing` made for the whole run (the objects and pods, the fake worker
server, the counting proxy), `run_side` blanks the worker counts of every AgentWorker's status
(an earlier operator wrote them; now only this side's can make them match again), starts
`agent-operator` with the side's arguments, waits (bounded) until every status counts what the
fake workers answer and every worker was read since the side began, lets it settle, samples
once a second for the window, and stops the operator. The operator's log must not show it
listing the pods again in the window (`relists_in_window`): its pod watch and the Deployments
agree. It makes no object itself and works out no figure (`bench.observing_report` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from agentworker_operator import kube
from bench import fake_fleet, phantom, phantom_kubelet
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
RELIST = "the pod watch disagrees with the Deployment"
"""How the operator's warning begins when it lists the pods again (agentworker_operator.sync):
its pod watch and the Deployment's status.replicas disagreed for rounds in a row."""
RELISTED = "the operator listed the pods again in the window"
"""How the problem `relists_in_window` finds begins."""


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


async def status_mismatches(
    client: kube.Kube, shape: FleetShape, pod_names: Mapping[int, str]
) -> list[str]:
    """AgentWorkers whose status counts no answers the fake workers gave in the last seconds."""
    now = time.time()
    moments = [now - lag for lag in range(round(STATUS_LAG_S) + 1)]
    wrong = []
    for aw in range(shape.agentworkers):
        name = fake_fleet.agentworker_name(aw)
        body = await client.get(kube.agentworker_path(phantom.NAMESPACE, name)) or {}
        seen = fake_fleet.counts_of(body.get("status") or {})
        expected = [fake_fleet.expected_counts(shape, aw, t, pod_names) for t in moments]
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
    shared: Shared,
    probes: processes.Probes,
    operator: processes.Child,
    read_before: list[int],
    pod_names: Mapping[int, str],
) -> None:
    """Wait (bounded) until every status matches the answers and every worker was read since
    the side began (`read_before`: the fake workers' per-worker counts then; `pod_names`: which
    pod plays each fake worker)."""
    cfg = shared.cfg
    deadline = time.monotonic() + cfg.verify_timeout_s
    wrong: list[str] = ["no status read yet"]
    unread = cfg.shape.workers
    while time.monotonic() < deadline:
        operator.check()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            wrong = await status_mismatches(shared.client, cfg.shape, pod_names)
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


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def operator_log_problems(lines: list[str]) -> list[str]:
    """The operator's WARNING and ERROR lines (it runs at --log-level=WARNING), first ten."""
    return [f"operator log: {line[:300]}" for line in lines[:10]] + (
        [f"operator log: ... {len(lines) - 10} more lines"] if len(lines) > 10 else []
    )


def _relisted(line: str) -> tuple[bool, datetime.datetime | None]:
    """Whether the operator's log line says it listed the pods again, and when (None when its
    time does not parse)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False, None
    if not isinstance(record, dict) or not str(record.get("message", "")).startswith(RELIST):
        return False, None
    try:
        when = datetime.datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return True, None
    return True, when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def relists_in_window(
    lines: Iterable[str], window: tuple[datetime.datetime, datetime.datetime]
) -> list[str]:
    """A problem for each time the operator listed the pods again in the window (or at a time
    its line does not tell): the pods are the Deployments' own, so that its pod watch and
    their status.replicas agree, and it must never have to."""
    found = []
    for line in lines:
        relisted, when = _relisted(line)
        if relisted and (when is None or window[0] <= when <= window[1]):
            found.append(f"{RELISTED}: {line[:300]}")
    return found


def _operator(
    shared: Shared, key: str, *, metrics_port: int, side: Side | None = None
) -> processes.Child:
    """An operator process watching the benchmark's namespace through the counting proxy, its
    log in operator-`key`.log; with a side's arguments (and profiled when asked) for a side."""
    cfg = shared.cfg
    return processes.Child(
        name=f"agent-operator ({key})",
        argv=processes.operator_argv(
            namespace=phantom.NAMESPACE,
            sync_period_s=cfg.sync_period_s,
            metrics_port=metrics_port,
            profile=None if side is None else _profile_path(shared.profile, key),
            extra_args=() if side is None else side.operator_args,
        ),
        log_path=shared.workdir / f"operator-{key}.log",
        env={**os.environ, "KUBECONFIG": str(shared.proxy.kubeconfig)},
    )


def _profile_path(profile: Path | None, key: str) -> Path | None:
    return None if profile is None else profile.with_stem(f"{profile.stem}-{key}")


async def make_pods(shared: Shared) -> dict[str, phantom_kubelet.Placed]:
    """Run an operator, not measured, until the Deployments it makes have every pod running
    (started by the phantom node's kubelet) and counted in their status; stop it. The pods
    started, by uid. Its log is no problem of the run: while the pods are made, a fleet with
    no worker ready yet is a warning, and its pod watch running ahead of the Deployments'
    status has it list the pods again; a note counts them."""
    operator = _operator(shared, "making-pods", metrics_port=free_port())
    try:
        await operator.start()
        note("an operator (not measured) makes the Deployments; starting their pods")
        placed = await phantom_kubelet.start_pods(
            shared.client, shared.cfg.shape, check=operator.check
        )
        note(f"{len(placed)} pods running; waiting until their Deployments count them")
        await phantom.wait_settled(shared.client, shared.cfg.shape)
        operator.check()
    finally:
        await operator.stop()
    lines = log_lines(operator.log_path)
    relisted = sum(1 for line in lines if _relisted(line)[0])
    note(
        f"pods made; that operator logged {len(lines)} warnings, {relisted} of them listings of "
        f"the pods again ({operator.log_path})"
    )
    return placed


async def run_side(shared: Shared, side: Side, pod_names: Mapping[int, str]) -> SideOutcome:
    """Blank the counts, start this side's operator, verify, settle, measure, stop it.
    `pod_names`: which pod plays each fake worker (index -> name)."""
    cfg = shared.cfg
    await blank_counts(shared.client, cfg.shape)
    metrics_port = free_port()
    operator = _operator(shared, side.key, metrics_port=metrics_port, side=side)
    probes = processes.Probes(shared.http, metrics_port=metrics_port, stats_port=shared.stats_port)
    try:
        read_before = await _per_worker(probes)
        await operator.start()
        note(f"{side.key}: operator started; waiting until the statuses count the answers")
        await verify(shared, probes, operator, read_before, pod_names)
        timing = f"settling {cfg.settle_s:.0f}s, then measuring {cfg.window_s:.0f}s"
        note(f"{side.key}: statuses match; {timing}")
        await asyncio.sleep(cfg.settle_s)
        operator.check()
        window_start = utc_now()
        samples = await measure(cfg, probes, operator, shared.fakes, shared.proxy)
        window = (window_start, utc_now())
        mismatches = await status_mismatches(shared.client, cfg.shape, pod_names)
        problems = [f"after the window: {m}" for m in mismatches]
    finally:
        await operator.stop()
    lines = log_lines(operator.log_path)
    problems = relists_in_window(lines, window) + problems + operator_log_problems(lines)
    return SideOutcome(
        side=side, samples=samples, window=window, problems=[f"{side.key}: {p}" for p in problems]
    )
